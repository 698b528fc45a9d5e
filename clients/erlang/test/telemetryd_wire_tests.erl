%% The encoder against the golden vectors of docs/wire-vectors.json, the static table of
%% docs/wire-format.md, and the v1 limits.
-module(telemetryd_wire_tests).

-include_lib("eunit/include/eunit.hrl").

source_dir() ->
    case os:getenv("TELEMETRYD_SOURCE_DIR") of
        false -> filename:join(["..", ".."]);  % clients/erlang in the source tree (rebar3)
        Dir -> Dir
    end.

valid_vectors() ->
    #{<<"vectors">> := Vectors} =
        telemetryd_test_json:read_file(filename:join([source_dir(), "docs", "wire-vectors.json"])),
    [V || #{<<"valid">> := true} = V <- Vectors].

%% Every valid vector: its expected events, encoded with the vector's time unit and base time,
%% are exactly its bytes.
vectors_test_() ->
    Vectors = valid_vectors(),
    [?_assert(length(Vectors) >= 5)
     | [{binary_to_list(Name), ?_assertEqual(binary:decode_hex(Hex), encode_vector(V))}
        || #{<<"name">> := Name, <<"hex">> := Hex} = V <- Vectors]].

encode_vector(#{<<"expect">> := #{<<"events">> := Events}} = Vector) ->
    Options0 = #{units_per_second => maps:get(<<"units_per_second">>, Vector, 1000000000),
                 max_frame_bytes => 65536},
    Options = case Vector of
                  #{<<"base_time">> := Base} -> Options0#{base_time => Base};
                  _ -> Options0
              end,
    {ok, Frame} = telemetryd_wire:encode_frame([typed_event(E) || E <- Events], Options),
    Frame.

typed_event(#{<<"name">> := Name, <<"measurements">> := Ms, <<"metadata">> := Md} = E) ->
    Event = #{name => Name,
              measurements => [{K, typed(V)} || [K, V] <- Ms],
              metadata => [{K, typed(V)} || [K, V] <- Md]},
    case E of
        #{<<"system_time">> := Time} -> Event#{time => Time};
        _ -> Event
    end.

typed(null) -> nil;
typed(true) -> true;
typed(false) -> false;
typed(#{<<"int">> := I}) -> {int, I};
typed(#{<<"float">> := F}) -> {float, float(F)};
typed(#{<<"string">> := S}) -> {string, S};
typed(#{<<"atom">> := A}) -> {atom, A};
typed(#{<<"bytes">> := Hex}) -> {bytes, binary:decode_hex(Hex)};
typed(#{<<"list">> := L}) -> {list, [typed(X) || X <- L]};
typed(#{<<"tuple">> := L}) -> {tuple, [typed(X) || X <- L]};
typed(#{<<"map">> := Pairs}) -> {map, [{typed(K), typed(V)} || [K, V] <- Pairs]}.

%% The same events as a :telemetry handler receives them (atoms, binaries, maps, tuples, a
%% make_ref() where the vector has opaque bytes) convert to the vector's typed events, up to the
%% order of map keys, which an Erlang map does not keep.
telemetry_terms_test_() ->
    [{binary_to_list(Name), ?_test(check_native(E))}
     || #{<<"name">> := Name, <<"expect">> := #{<<"events">> := Events}} <- valid_vectors(),
        E <- Events].

check_native(#{<<"name">> := Name} = E) ->
    Ref = make_ref(),
    #{measurements := Ms, metadata := Md} = Typed = typed_event(E),
    Expected = sorted(Typed#{metadata := [{K, swap_bytes(V, Ref)} || {K, V} <- Md]}),
    EventName = [binary_to_atom(S) || S <- binary:split(Name, <<".">>, [global])],
    Measurements = maps:from_list([{binary_to_atom(K), native(V)} || {K, V} <- Ms]),
    Metadata = maps:from_list([{binary_to_atom(K), native(swap_bytes(V, Ref))} || {K, V} <- Md]),
    Time = maps:get(time, Typed, undefined),
    {ok, Event, 0} = telemetryd_wire:event(EventName, Measurements, Metadata, Time),
    ?assertEqual(Expected, sorted(Event)).

%% Opaque bytes stand for a reference; the Erlang side has a real one.
swap_bytes({bytes, _}, Ref) -> {bytes, term_to_binary(Ref)};
swap_bytes(V, _) -> V.

native(nil) -> nil;
native(true) -> true;
native(false) -> false;
native({int, I}) -> I;
native({float, F}) -> F;
native({string, S}) -> S;
native({atom, A}) -> binary_to_atom(A);
native({bytes, B}) -> binary_to_term(B);
native({list, L}) -> [native(X) || X <- L];
native({tuple, L}) -> list_to_tuple([native(X) || X <- L]);
native({map, Pairs}) -> maps:from_list([{native(K), native(V)} || {K, V} <- Pairs]).

sorted(#{measurements := Ms, metadata := Md} = Event) ->
    Event#{measurements := lists:sort(Ms), metadata := lists:sort([{K, sort_maps(V)} || {K, V} <- Md])}.

sort_maps({map, Pairs}) -> {map, lists:sort([{sort_maps(K), sort_maps(V)} || {K, V} <- Pairs])};
sort_maps({Kind, Items}) when Kind =:= list; Kind =:= tuple -> {Kind, [sort_maps(X) || X <- Items]};
sort_maps(V) -> V.

%% The static table is the one docs/wire-format.md lists, reference by reference.
static_table_test() ->
    {ok, Doc} = file:read_file(filename:join([source_dir(), "docs", "wire-format.md"])),
    {match, Rows} = re:run(Doc, "^\\| (\\d+) \\| `([^`]+)` \\|$", [multiline, global,
                                                                   {capture, all_but_first, binary}]),
    Documented = [{binary_to_integer(Ref), S} || [Ref, S] <- Rows],
    ?assertEqual(lists:zip(lists:seq(0, 63), telemetryd_wire:static_table()), Documented).

options() -> #{units_per_second => 1000000000, max_frame_bytes => 1432}.

event(Name) -> #{name => Name, measurements => [{<<"count">>, {int, 1}}], metadata => []}.

%% Events fill frames up to the budget: each finished frame is within it, frame_size/1 is its
%% exact size, and the event that did not fit goes into the next frame.
frames_within_budget_test() ->
    Events = [#{name => <<"app.request.done">>,
                measurements => [{<<"count">>, {int, I}}],
                metadata => [{<<"request_id">>, {string, integer_to_binary(I)}}]}
              || I <- lists:seq(1, 500)],
    Frames = fill(Events, telemetryd_wire:new_frame(options()), []),
    ?assert(length(Frames) > 1),
    lists:foreach(fun(Bytes) -> ?assert(byte_size(Bytes) =< 1432) end, Frames),
    Decoded = lists:append([maps:get(events, telemetryd_test_frame:decode(F)) || F <- Frames]),
    ?assertEqual([{<<"count">>, {int, I}} || I <- lists:seq(1, 500)],
                 [M || #{measurements := [M]} <- Decoded]).

fill([], Frame, Acc) ->
    lists:reverse([finish_checked(Frame) | Acc]);
fill([E | Rest] = Events, Frame, Acc) ->
    case telemetryd_wire:add(E, Frame) of
        {ok, Frame1} -> fill(Rest, Frame1, Acc);
        full -> fill(Events, telemetryd_wire:reset(Frame), [finish_checked(Frame) | Acc])
    end.

finish_checked(Frame) ->
    Bytes = telemetryd_wire:finish(Frame),
    ?assertEqual(byte_size(Bytes), telemetryd_wire:frame_size(Frame)),
    Bytes.

%% A repeated string is sent once per frame; static strings are not sent.
strings_once_per_frame_test() ->
    E = #{name => <<"a.b">>, measurements => [{<<"count">>, {int, 1}}],
          metadata => [{<<"pool">>, {atom, <<"web">>}}, {<<"node_id">>, {string, <<"web">>}}]},
    {ok, Bytes} = telemetryd_wire:encode_frame([E, E], options()),
    #{strings := Strings, events := [D, D]} = telemetryd_test_frame:decode(Bytes),
    ?assertEqual([<<"a.b">>, <<"web">>], Strings),
    ?assertEqual(#{name => <<"a.b">>, time => undefined, measurements => [{<<"count">>, {int, 1}}],
                   metadata => [{<<"pool">>, {atom, <<"web">>}},
                                {<<"node_id">>, {string, <<"web">>}}]}, D).

%% Without a given base time the first timed event's time becomes the frame's; later events are
%% sent relative to it, earlier times as negative offsets.
event_times_test() ->
    Base = 1764000000000000000,
    Events = [(event(<<"a.b">>))#{time => T} || T <- [Base, Base + 5, Base - 7]]
             ++ [event(<<"a.b">>)],
    {ok, Bytes} = telemetryd_wire:encode_frame(Events, options()),
    #{base_time := Base, events := Decoded} = telemetryd_test_frame:decode(Bytes),
    ?assertEqual([Base, Base + 5, Base - 7, undefined], [T || #{time := T} <- Decoded]).

integers_test() ->
    Max = 16#7FFFFFFFFFFFFFFF,
    Min = -16#8000000000000000,
    Values = [0, 63, 64, -1, Max, Min],
    E = #{name => <<"a.b">>, measurements => [{<<"value">>, {int, V}} || V <- Values],
          metadata => [{<<"v", (integer_to_binary(I))/binary>>, {int, V}}
                       || {I, V} <- lists:zip(lists:seq(1, length(Values)), Values)]},
    {ok, Bytes} = telemetryd_wire:encode_frame([E], options()),
    #{events := [#{measurements := Ms, metadata := Md}]} = telemetryd_test_frame:decode(Bytes),
    ?assertEqual(Values, [V || {_, {int, V}} <- Ms]),
    ?assertEqual(Values, [V || {_, {int, V}} <- Md]),
    ?assertEqual({error, invalid},
                 telemetryd_wire:add(E#{measurements := [{<<"value">>, {int, Max + 1}}]},
                                     telemetryd_wire:new_frame(options()))).

invalid_events_test_() ->
    Frame = telemetryd_wire:new_frame(options()),
    Add = fun(E) -> telemetryd_wire:add(E, Frame) end,
    Long = binary:copy(<<"a">>, 256),
    Deep = lists:foldl(fun(_, T) -> {list, [T]} end, {int, 1}, lists:seq(1, 9)),
    Fine = lists:foldl(fun(_, T) -> {list, [T]} end, {int, 1}, lists:seq(1, 8)),
    [?_assertEqual({error, invalid}, Add(event(<<>>))),
     ?_assertEqual({error, invalid}, Add(event(<<"a..b">>))),
     ?_assertEqual({error, invalid}, Add(event(<<"a.b.">>))),
     ?_assertEqual({error, invalid}, Add(event(<<"a.", 1, "b">>))),
     ?_assertEqual({error, invalid}, Add(event(<<"a.", 16#FF, "b">>))),
     ?_assertEqual({error, invalid}, Add(event(Long))),
     ?_assertMatch({ok, _}, Add(event(binary:part(Long, 0, 255)))),
     ?_assertEqual({error, invalid}, Add(event(iolist_to_binary(lists:join(".", lists:duplicate(17, "a")))))),
     ?_assertMatch({ok, _}, Add(event(iolist_to_binary(lists:join(".", lists:duplicate(16, "a")))))),
     ?_assertEqual({error, invalid}, Add((event(<<"a.b">>))#{metadata := [{<<>>, nil}]})),
     ?_assertEqual({error, invalid}, Add((event(<<"a.b">>))#{metadata := [{<<"k">>, Deep}]})),
     ?_assertMatch({ok, _}, Add((event(<<"a.b">>))#{metadata := [{<<"k">>, Fine}]})),
     ?_assertEqual({error, invalid},
                   Add((event(<<"a.b">>))#{measurements := lists:duplicate(33, {<<"count">>, {int, 1}})})),
     ?_assertEqual({error, invalid},
                   Add((event(<<"a.b">>))#{metadata := lists:duplicate(65, {<<"k">>, nil})})),
     ?_assertEqual({error, invalid},
                   Add((event(<<"a.b">>))#{metadata := [{<<"k">>, {string, binary:copy(<<"x">>, 4097)}}]})),
     ?_assertEqual({error, invalid}, Add((event(<<"a.b">>))#{metadata := [{<<"k">>, nil} | tail]})),
     ?_assertEqual({error, invalid}, Add((event(<<"a.b">>))#{measurements := [{<<"count">>, 1}]})),
     ?_assertEqual({error, invalid}, Add(#{name => <<"a.b">>})),
     ?_assertEqual({error, invalid}, Add(not_an_event))].

%% An event that needs more than 1024 frame strings does not fit any frame; next to other events
%% it only means the frame is full.
string_table_limit_test() ->
    Many = #{name => <<"a.b">>, measurements => [],
             metadata => [{<<"k">>, {list, [{string, integer_to_binary(I)} || I <- lists:seq(1, 1100)]}}]},
    Big = telemetryd_wire:new_frame(#{units_per_second => 1000, max_frame_bytes => 1000000}),
    ?assertEqual({error, too_large}, telemetryd_wire:add(Many, Big)),
    Half = Many#{metadata := [{<<"k">>, {list, [{string, integer_to_binary(I)} || I <- lists:seq(1, 600)]}}]},
    {ok, Frame} = telemetryd_wire:add(Half, Big),
    ?assertEqual(full, telemetryd_wire:add(Half#{name := <<"c.d">>,
                                                 metadata := [{<<"k">>, {list, [{string, integer_to_binary(I)} || I <- lists:seq(601, 1200)]}}]},
                                           Frame)).

too_large_test() ->
    Small = telemetryd_wire:new_frame(#{units_per_second => 1000, max_frame_bytes => 100}),
    E = (event(<<"a.b">>))#{metadata := [{<<"k">>, {bytes, binary:copy(<<0>>, 200)}}]},
    ?assertEqual({error, too_large}, telemetryd_wire:add(E, Small)),
    {ok, One} = telemetryd_wire:add((event(<<"a.b">>))#{metadata := [{<<"k">>, {bytes, binary:copy(<<0>>, 60)}}]}, Small),
    ?assertEqual(full, telemetryd_wire:add((event(<<"a.b">>))#{metadata := [{<<"k">>, {bytes, binary:copy(<<0>>, 60)}}]}, One)).

%%% From :telemetry terms

term_test_() ->
    Ref = make_ref(),
    Pid = self(),
    [?_assertEqual({ok, nil}, telemetryd_wire:term(nil)),
     ?_assertEqual({ok, {atom, <<"undefined">>}}, telemetryd_wire:term(undefined)),
     ?_assertEqual({ok, true}, telemetryd_wire:term(true)),
     ?_assertEqual({ok, {bytes, term_to_binary(Ref)}}, telemetryd_wire:term(Ref)),
     ?_assertEqual({ok, {bytes, term_to_binary(Pid)}}, telemetryd_wire:term(Pid)),
     ?_assertEqual({ok, {string, <<"é"/utf8>>}}, telemetryd_wire:term(<<"é"/utf8>>)),
     ?_assertEqual({ok, {list, [{int, 97}, {int, 98}]}}, telemetryd_wire:term("ab")),
     ?_assertEqual({ok, {tuple, [{atom, <<"error">>}, {string, <<"x">>}]}},
                   telemetryd_wire:term({error, <<"x">>})),
     ?_assertEqual({ok, {map, [{{atom, <<"a">>}, {float, 1.5}}, {{string, <<"b">>}, {list, []}}]}},
                   telemetryd_wire:term(#{a => 1.5, <<"b">> => []})),
     ?_assertEqual(error, telemetryd_wire:term(fun() -> ok end)),
     ?_assertEqual(error, telemetryd_wire:term(1 bsl 64)),
     ?_assertEqual(error, telemetryd_wire:term(<<1:3>>)),
     ?_assertEqual(error, telemetryd_wire:term([a | b])),
     ?_assertEqual(error, telemetryd_wire:term(binary:copy(<<"x">>, 4097))),
     ?_assertEqual(error, telemetryd_wire:term(#{k => [fun() -> ok end]})),
     ?_assertMatch({ok, _}, telemetryd_wire:term(nest(8))),
     ?_assertEqual(error, telemetryd_wire:term(nest(9)))].

nest(0) -> 1;
nest(N) -> [nest(N - 1)].

%% Values that cannot be sent are left out and counted; the rest of the event is kept.
event_skips_unsendable_values_test() ->
    {ok, Event, Skipped} =
        telemetryd_wire:event([app, request, done],
                              #{count => 1, big => 1 bsl 70, bad => <<"x">>},
                              #{node_id => <<"n1">>, fn => fun() -> ok end, big => 1 bsl 64,
                                {tuple_key} => 1, <<>> => 2, <<"ok_key">> => ok},
                              undefined),
    ?assertEqual(5, Skipped),
    ?assertEqual(<<"app.request.done">>, maps:get(name, Event)),
    ?assertEqual([{<<"big">>, {float, float(1 bsl 70)}}, {<<"count">>, {int, 1}}],
                 lists:sort(maps:get(measurements, Event))),
    ?assertEqual([{<<"node_id">>, {string, <<"n1">>}}, {<<"ok_key">>, {atom, <<"ok">>}}],
                 lists:sort(maps:get(metadata, Event))),
    ?assertEqual(false, maps:is_key(time, Event)).

event_names_test_() ->
    [?_assertEqual({error, invalid_name}, telemetryd_wire:event([], #{}, #{}, undefined)),
     ?_assertEqual({error, invalid_name}, telemetryd_wire:event([a, ''], #{}, #{}, undefined)),
     ?_assertEqual({error, invalid_name}, telemetryd_wire:event([a, "b"], #{}, #{}, undefined)),
     ?_assertEqual({error, invalid_name}, telemetryd_wire:event(not_a_list, #{}, #{}, undefined)),
     ?_assertMatch({ok, #{name := <<"a.b">>}, 0}, telemetryd_wire:event(<<"a.b">>, #{}, #{}, undefined)),
     ?_assertMatch({ok, #{time := 42}, 0}, telemetryd_wire:event([a], #{}, #{}, 42)),
     %% Not maps: nothing to send, counted once each.
     ?_assertMatch({ok, #{measurements := [], metadata := []}, 2},
                   telemetryd_wire:event([a], nope, nope, undefined))].

%% Over 64 metadata entries: the first 64 are kept, the span context always among them.
metadata_limit_test() ->
    Metadata = maps:from_list([{list_to_atom("a" ++ integer_to_list(I)), I} || I <- lists:seq(1, 70)]),
    Ref = make_ref(),
    {ok, #{metadata := Kept}, 7} =
        telemetryd_wire:event([a], #{}, Metadata#{telemetry_span_context => Ref}, undefined),
    ?assertEqual(64, length(Kept)),
    ?assertEqual({<<"telemetry_span_context">>, {bytes, term_to_binary(Ref)}}, hd(Kept)).
