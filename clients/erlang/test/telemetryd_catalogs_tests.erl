%% The built-in catalogs' event lists agree with config/catalogs/*.yaml.
-module(telemetryd_catalogs_tests).

-include_lib("eunit/include/eunit.hrl").

catalog_dir() ->
    Source = case os:getenv("TELEMETRYD_SOURCE_DIR") of
                 false -> filename:join(["..", ".."]);
                 Dir -> Dir
             end,
    filename:join([Source, "config", "catalogs"]).

%% Every catalog file is one of the built-in catalogs, and every built-in catalog has a file.
catalog_files_test() ->
    Files = filelib:wildcard("*.yaml", catalog_dir()),
    ?assertEqual(lists:sort([atom_to_list(C) ++ ".yaml" || C <- telemetryd_catalogs:names()]),
                 lists:sort(Files)).

%% Each catalog's events, in the file's order.
events_test_() ->
    [{atom_to_list(C),
      ?_assertEqual(yaml_event_names(filename:join(catalog_dir(), atom_to_list(C) ++ ".yaml")),
                    [join(E) || E <- telemetryd_catalogs:events(C)])}
     || C <- telemetryd_catalogs:names()].

unknown_catalog_test() ->
    ?assertError({unknown_catalog, nope}, telemetryd_catalogs:events(nope)).

join(Segments) -> lists:flatten(lists:join(".", [atom_to_list(S) || S <- Segments])).

%% The keys of the top-level `events:` block mapping: lines indented by two spaces up to the next
%% top-level key. The built-in catalogs are written that way; a file that is not fails the test.
yaml_event_names(Path) ->
    {ok, Bytes} = file:read_file(Path),
    Lines = string:split(binary_to_list(Bytes), "\n", all),
    [_ | AfterEvents] = lists:dropwhile(fun(L) -> L =/= "events:" end, Lines),
    Block = lists:takewhile(fun(L) -> L =:= "" orelse hd(L) =:= $\s orelse hd(L) =:= $# end,
                            AfterEvents),
    Names = [Name || L <- Block,
                     {match, [Name]} <- [re:run(L, "^  ([^ #][^:]*):\\s*$",
                                                [{capture, all_but_first, list}])]],
    ?assert(length(Names) > 0),
    [lists:flatten(N) || N <- Names].
