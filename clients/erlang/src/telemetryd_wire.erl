%% Wire format v1 of telemetryd (docs/wire-format.md): builds frames of events, and turns the
%% arguments of a :telemetry handler into the typed events that frames carry.
%%
%% Pure functions on values: a frame is an immutable value, so an event that does not fit leaves
%% the frame it was offered to exactly as it was.
-module(telemetryd_wire).

-export([new_frame/1, add/2, finish/1, reset/1, is_empty/1, event_count/1, frame_size/1,
         encode_frame/2, event/4, term/1, static_table/0]).

-export_type([frame/0, event/0, typed/0, number_value/0]).

-define(MAGIC, 16#D7, 16#1E).
-define(VERSION, 1).
-define(STATIC_STRINGS, 64).
-define(MAX_STRINGS, 1024).
-define(MAX_STRING_BYTES, 4096).
-define(MAX_NAME_BYTES, 255).
-define(MAX_NAME_SEGMENTS, 16).
-define(MAX_MEASUREMENTS, 32).
-define(MAX_METADATA, 64).
-define(MAX_NESTING, 8).
-define(MAX_EVENTS, 65536).
-define(MAX_UNITS_PER_SECOND, 1000000000000).
-define(INT64_MIN, -16#8000000000000000).
-define(INT64_MAX, 16#7FFFFFFFFFFFFFFF).

%% A metadata value as the wire format sees it. nil, true and false have their own tags; strings
%% are binaries, atoms are sent by name; bytes are opaque (a reference or a pid as
%% term_to_binary/1 gives it).
-type typed() :: nil | true | false
               | {int, integer()} | {float, float()}
               | {string, binary()} | {atom, binary()} | {bytes, binary()}
               | {list, [typed()]} | {tuple, [typed()]} | {map, [{typed(), typed()}]}.
-type number_value() :: {int, integer()} | {float, float()}.
%% An event ready to encode. Keys and names are UTF-8 binaries; the order of the lists is kept.
%% time is the system time in the frame's native units since the Unix epoch.
-type event() :: #{name := binary(),
                   measurements := [{binary(), number_value()}],
                   metadata := [{binary(), typed()}],
                   time => integer()}.

-record(frame, {
    units :: pos_integer(),           % units_per_second of the header
    max_bytes :: pos_integer(),       % budget for the whole frame
    base_time :: integer() | undefined,
    fixed_base :: boolean(),          % base_time was given, not taken from the first event
    strings = #{} :: #{binary() => non_neg_integer()},  % frame string -> reference
    string_count = 0 :: non_neg_integer(),
    table = [] :: iodata(),           % encoded string entries, newest first
    table_bytes = 0 :: non_neg_integer(),
    events = [] :: iodata(),          % encoded events, newest first
    events_bytes = 0 :: non_neg_integer(),
    event_count = 0 :: non_neg_integer()
}).
-opaque frame() :: #frame{}.

%%% Frames

%% An empty frame. units_per_second is the sender's native time unit; max_frame_bytes the budget
%% including the header; base_time, when given, is the frame's base time (otherwise the time of
%% the first event that has one, if any).
-spec new_frame(#{units_per_second := pos_integer(), max_frame_bytes := pos_integer(),
                  base_time => integer()}) -> frame().
new_frame(#{units_per_second := Units, max_frame_bytes := Max} = Options)
  when is_integer(Units), Units >= 1, Units =< ?MAX_UNITS_PER_SECOND,
       is_integer(Max), Max > 0 ->
    Base = maps:get(base_time, Options, undefined),
    #frame{units = Units, max_bytes = Max, base_time = Base, fixed_base = Base =/= undefined}.

%% Adds an event. full: it does not fit next to the events already in the frame (finish the
%% frame and add it to an empty one). {error, too_large}: it does not fit even in an empty frame.
%% {error, invalid}: it breaks a v1 limit (name, key, counts, string length, nesting) or is not
%% an event() at all.
-spec add(event(), frame()) -> {ok, frame()} | full | {error, too_large | invalid}.
add(Event, #frame{event_count = Count} = Frame) when Count >= ?MAX_EVENTS ->
    case add(Event, reset(Frame)) of
        {ok, _} -> full;
        Error -> Error
    end;
add(Event, Frame0) ->
    Frame = take_base_time(Event, Frame0),
    try encode_event(Event, Frame) of
        {Body, Frame1} ->
            BodyBytes = iolist_size(Body),
            Length = varint(BodyBytes),
            Frame2 = Frame1#frame{events = [Frame1#frame.events, Length, Body],
                                  events_bytes = Frame1#frame.events_bytes
                                                 + byte_size(Length) + BodyBytes,
                                  event_count = Frame1#frame.event_count + 1},
            case frame_size(Frame2) =< Frame2#frame.max_bytes of
                true -> {ok, Frame2};
                false -> too_large_or_full(Frame0)
            end
    catch
        throw:too_many_strings -> too_large_or_full(Frame0);
        throw:invalid -> {error, invalid};
        error:_ -> {error, invalid}  % not an event at all (an improper list, say)
    end.

too_large_or_full(#frame{event_count = 0}) -> {error, too_large};
too_large_or_full(_) -> full.

take_base_time(#{time := Time}, #frame{base_time = undefined} = Frame) when is_integer(Time) ->
    Frame#frame{base_time = Time};
take_base_time(_, Frame) ->
    Frame.

%% The frame's bytes.
-spec finish(frame()) -> binary().
finish(#frame{} = F) ->
    iolist_to_binary([header(F), varint(F#frame.string_count), F#frame.table,
                      varint(F#frame.event_count), F#frame.events]).

%% An empty frame with the same options.
-spec reset(frame()) -> frame().
reset(#frame{units = Units, max_bytes = Max, fixed_base = Fixed, base_time = Base}) ->
    #frame{units = Units, max_bytes = Max, fixed_base = Fixed,
           base_time = case Fixed of true -> Base; false -> undefined end}.

-spec is_empty(frame()) -> boolean().
is_empty(#frame{event_count = Count}) -> Count =:= 0.

-spec event_count(frame()) -> non_neg_integer().
event_count(#frame{event_count = Count}) -> Count.

%% The size in bytes the frame has if finished now.
-spec frame_size(frame()) -> non_neg_integer().
frame_size(#frame{} = F) ->
    iolist_size(header(F)) + byte_size(varint(F#frame.string_count)) + F#frame.table_bytes
        + byte_size(varint(F#frame.event_count)) + F#frame.events_bytes.

%% One frame holding all of Events, in order.
-spec encode_frame([event()], #{units_per_second := pos_integer(),
                                max_frame_bytes := pos_integer(),
                                base_time => integer()}) ->
          {ok, binary()} | {error, {full | too_large | invalid, non_neg_integer()}}.
encode_frame(Events, Options) ->
    encode_all(Events, new_frame(Options), 0).

encode_all([], Frame, _) ->
    {ok, finish(Frame)};
encode_all([Event | Rest], Frame, Index) ->
    case add(Event, Frame) of
        {ok, Frame1} -> encode_all(Rest, Frame1, Index + 1);
        full -> {error, {full, Index}};
        {error, Reason} -> {error, {Reason, Index}}
    end.

header(#frame{units = Units, base_time = undefined}) ->
    [?MAGIC, ?VERSION, 0, varint(Units)];
header(#frame{units = Units, base_time = Base}) ->
    [?MAGIC, ?VERSION, 1, varint(Units), varint(zigzag(wrap64(Base)))].

%%% Events

encode_event(#{name := Name, measurements := Measurements, metadata := Metadata} = Event,
             Frame0) ->
    valid_name(Name) orelse throw(invalid),
    length(Measurements) =< ?MAX_MEASUREMENTS orelse throw(invalid),
    length(Metadata) =< ?MAX_METADATA orelse throw(invalid),
    {NameRef, Frame1} = ref(Name, Frame0),
    Time = case Event of
               #{time := T} when is_integer(T) ->
                   [1, varint(zigzag(wrap64(T - Frame1#frame.base_time)))];
               _ ->
                   [0]
           end,
    {MeasurementBytes, Frame2} = encode_entries(Measurements, Frame1, fun measurement/3),
    {MetadataBytes, Frame3} = encode_entries(Metadata, Frame2, fun metadata_entry/3),
    {[varint(NameRef), Time,
      varint(length(Measurements)), MeasurementBytes,
      varint(length(Metadata)), MetadataBytes], Frame3};
encode_event(_, _) ->
    throw(invalid).

%% Encodes key-value entries: each key as a string reference, then EncodeValue(Ref, Value, Frame).
encode_entries(Entries, Frame, EncodeValue) ->
    lists:mapfoldl(fun({Key, Value}, Frame0) ->
                           valid_key(Key) orelse throw(invalid),
                           {Ref, Frame1} = ref(Key, Frame0),
                           EncodeValue(Ref, Value, Frame1);
                      (_, _) ->
                           throw(invalid)
                   end, Frame, Entries).

measurement(Ref, {int, I}, Frame) when is_integer(I), I >= ?INT64_MIN, I =< ?INT64_MAX ->
    {[varint(Ref bsl 1), varint(zigzag(I))], Frame};
measurement(Ref, {float, F}, Frame) when is_float(F) ->
    {[varint((Ref bsl 1) bor 1), <<F:64/float-little>>], Frame};
measurement(_, _, _) ->
    throw(invalid).

metadata_entry(Ref, Value, Frame0) ->
    {Bytes, Frame} = encode_term(Value, 0, Frame0),
    {[varint(Ref), Bytes], Frame}.

encode_term(nil, _, Frame) -> {<<0>>, Frame};
encode_term(false, _, Frame) -> {<<1>>, Frame};
encode_term(true, _, Frame) -> {<<2>>, Frame};
encode_term({int, I}, _, Frame) when is_integer(I), I >= 0, I =< 63 ->
    {<<(16#40 + I)>>, Frame};
encode_term({int, I}, _, Frame) when is_integer(I), I >= ?INT64_MIN, I =< ?INT64_MAX ->
    {[3, varint(zigzag(I))], Frame};
encode_term({float, F}, _, Frame) when is_float(F) ->
    {<<4, F:64/float-little>>, Frame};
encode_term({string, S}, _, Frame0) when is_binary(S) ->
    {Ref, Frame} = ref(S, Frame0),
    {[5, varint(Ref)], Frame};
encode_term({atom, A}, _, Frame0) when is_binary(A) ->
    {Ref, Frame} = ref(A, Frame0),
    {[6, varint(Ref)], Frame};
encode_term({bytes, B}, _, Frame) when is_binary(B), byte_size(B) =< ?MAX_STRING_BYTES ->
    {[7, varint(byte_size(B)), B], Frame};
encode_term({Kind, Items}, Depth, Frame) when (Kind =:= list orelse Kind =:= tuple),
                                              is_list(Items), Depth < ?MAX_NESTING ->
    Tag = case Kind of list -> 8; tuple -> 9 end,
    {Bytes, Frame1} = lists:mapfoldl(fun(Item, F) -> encode_term(Item, Depth + 1, F) end,
                                     Frame, Items),
    {[Tag, varint(length(Items)), Bytes], Frame1};
encode_term({map, Pairs}, Depth, Frame) when is_list(Pairs), Depth < ?MAX_NESTING ->
    {Bytes, Frame1} = lists:mapfoldl(
                        fun({K, V}, F0) ->
                                {KB, F1} = encode_term(K, Depth + 1, F0),
                                {VB, F2} = encode_term(V, Depth + 1, F1),
                                {[KB, VB], F2};
                           (_, _) ->
                                throw(invalid)
                        end, Frame, Pairs),
    {[10, varint(length(Pairs)), Bytes], Frame1};
encode_term(_, _, _) ->
    throw(invalid).

%% The reference of a string: its static index, or its frame index (added if new).
ref(Text, _Frame) when byte_size(Text) > ?MAX_STRING_BYTES ->
    throw(invalid);
ref(Text, #frame{strings = Strings} = Frame) ->
    case static_ref(Text) of
        Ref when is_integer(Ref) ->
            {Ref, Frame};
        undefined ->
            case Strings of
                #{Text := Ref} ->
                    {Ref, Frame};
                _ when Frame#frame.string_count >= ?MAX_STRINGS ->
                    throw(too_many_strings);
                _ ->
                    Index = Frame#frame.string_count,
                    Entry = [varint(byte_size(Text)), Text],
                    Ref = ?STATIC_STRINGS + Index,
                    {Ref, Frame#frame{strings = Strings#{Text => Ref},
                                      string_count = Index + 1,
                                      table = [Frame#frame.table, Entry],
                                      table_bytes = Frame#frame.table_bytes
                                                    + iolist_size(Entry)}}
            end
    end.

%%% From :telemetry to typed events

%% Turns what a :telemetry handler receives into an event. The name is a list of atoms (or a
%% binary already joined with '.'). Measurements must be numbers: integers beyond 64 bits become
%% floats; anything else is skipped. Metadata values that cannot be sent (funs, integers beyond 64
%% bits, improper lists, bitstrings, strings over 4096 bytes, nesting over 8 levels) are skipped,
%% as are keys that are not atoms or non-empty UTF-8 binaries, and entries beyond the v1 counts.
%% Skipped counts every measurement and metadata entry left out. Time is the system time in
%% native units, or undefined.
-spec event(term(), term(), term(), integer() | undefined) ->
          {ok, event(), Skipped :: non_neg_integer()} | {error, invalid_name}.
event(EventName, Measurements, Metadata, Time) ->
    case event_name(EventName) of
        {ok, Name} ->
            {Ms, SkippedMs} = measurements(Measurements),
            {Md, SkippedMd} = metadata(Metadata),
            Event0 = #{name => Name, measurements => Ms, metadata => Md},
            Event = case Time of
                        T when is_integer(T) -> Event0#{time => T};
                        _ -> Event0
                    end,
            {ok, Event, SkippedMs + SkippedMd};
        error ->
            {error, invalid_name}
    end.

event_name(Name) when is_binary(Name) ->
    case valid_name(Name) of
        true -> {ok, Name};
        false -> error
    end;
event_name([_ | _] = Segments) ->
    case lists:all(fun is_atom/1, Segments) of
        true ->
            Name = iolist_to_binary(lists:join($., [atom_to_binary(S, utf8) || S <- Segments])),
            event_name(Name);
        false ->
            error
    end;
event_name(_) ->
    error.

measurements(Map) when is_map(Map) ->
    entries(maps:to_list(Map), fun number/1, ?MAX_MEASUREMENTS);
measurements(_) ->
    {[], 1}.

number(I) when is_integer(I), I >= ?INT64_MIN, I =< ?INT64_MAX -> {ok, {int, I}};
number(I) when is_integer(I) ->
    try float(I) of
        F -> {ok, {float, F}}
    catch
        error:badarg -> error
    end;
number(F) when is_float(F) -> {ok, {float, F}};
number(_) -> error.

metadata(Map) when is_map(Map) ->
    %% The span context first, so that the entry limit never costs a span its pairing.
    Entries = case maps:take(telemetry_span_context, Map) of
                  {Context, Rest} -> [{telemetry_span_context, Context} | maps:to_list(Rest)];
                  error -> maps:to_list(Map)
              end,
    entries(Entries, fun term/1, ?MAX_METADATA);
metadata(_) ->
    {[], 1}.

%% Converts keys and values, keeping at most Max entries; returns them and how many were skipped.
entries(Entries, Convert, Max) ->
    entries(Entries, Convert, Max, [], 0).

entries([], _, _, Acc, Skipped) ->
    {lists:reverse(Acc), Skipped};
entries([{Key, Value} | Rest], Convert, Max, Acc, Skipped) when length(Acc) < Max ->
    case {key(Key), Convert(Value)} of
        {{ok, K}, {ok, V}} -> entries(Rest, Convert, Max, [{K, V} | Acc], Skipped);
        _ -> entries(Rest, Convert, Max, Acc, Skipped + 1)
    end;
entries([_ | Rest], Convert, Max, Acc, Skipped) ->
    entries(Rest, Convert, Max, Acc, Skipped + 1).

key(Key) when is_atom(Key) ->
    key(atom_to_binary(Key, utf8));
key(Key) when is_binary(Key) ->
    case valid_key(Key) of
        true -> {ok, Key};
        false -> error
    end;
key(_) ->
    error.

%% The typed form of an Erlang term, or error if v1 cannot carry it.
-spec term(term()) -> {ok, typed()} | error.
term(Term) ->
    try
        {ok, to_typed(Term, 0)}
    catch
        throw:unsendable -> error
    end.

to_typed(nil, _) -> nil;
to_typed(true, _) -> true;
to_typed(false, _) -> false;
to_typed(A, _) when is_atom(A) -> {atom, atom_to_binary(A, utf8)};
to_typed(I, _) when is_integer(I), I >= ?INT64_MIN, I =< ?INT64_MAX -> {int, I};
to_typed(F, _) when is_float(F) -> {float, F};
to_typed(B, _) when is_binary(B), byte_size(B) =< ?MAX_STRING_BYTES -> {string, B};
to_typed(R, _) when is_reference(R); is_pid(R); is_port(R) -> {bytes, term_to_binary(R)};
to_typed(L, Depth) when is_list(L), Depth < ?MAX_NESTING ->
    {list, typed_list(L, Depth + 1)};
to_typed(T, Depth) when is_tuple(T), Depth < ?MAX_NESTING ->
    {tuple, [to_typed(E, Depth + 1) || E <- tuple_to_list(T)]};
to_typed(M, Depth) when is_map(M), Depth < ?MAX_NESTING ->
    {map, [{to_typed(K, Depth + 1), to_typed(V, Depth + 1)} || {K, V} <- maps:to_list(M)]};
to_typed(_, _) ->
    throw(unsendable).

typed_list([], _) -> [];
typed_list([H | T], Depth) -> [to_typed(H, Depth) | typed_list(T, Depth)];
typed_list(_Improper, _) -> throw(unsendable).

%%% Validation

valid_name(Name) when is_binary(Name), byte_size(Name) >= 1,
                      byte_size(Name) =< ?MAX_NAME_BYTES ->
    valid_utf8(Name) andalso valid_segments(Name, $., 1);
valid_name(_) ->
    false.

valid_segments(<<>>, Previous, Segments) ->
    Previous =/= $. andalso Segments =< ?MAX_NAME_SEGMENTS;
valid_segments(<<C, _/binary>>, _, _) when C < 16#20; C =:= 16#7F ->
    false;
valid_segments(<<$., _/binary>>, $., _) ->
    false;
valid_segments(<<$., Rest/binary>>, _, Segments) ->
    valid_segments(Rest, $., Segments + 1);
valid_segments(<<C, Rest/binary>>, _, Segments) ->
    valid_segments(Rest, C, Segments).

valid_key(Key) when is_binary(Key), byte_size(Key) >= 1 -> valid_utf8(Key);
valid_key(_) -> false.

valid_utf8(<<_/utf8, Rest/binary>>) -> valid_utf8(Rest);
valid_utf8(<<>>) -> true;
valid_utf8(_) -> false.

%%% Primitives

varint(N) when N < 16#80 -> <<N>>;
varint(N) -> <<1:1, (N band 16#7F):7, (varint(N bsr 7))/binary>>.

zigzag(N) when N >= 0 -> N bsl 1;
zigzag(N) -> (-N bsl 1) - 1.

%% Two's complement wrap into a signed 64-bit integer, as a 64-bit receiver adds it back.
wrap64(N) when N >= ?INT64_MIN, N =< ?INT64_MAX -> N;
wrap64(N) -> ((N - ?INT64_MIN) band 16#FFFFFFFFFFFFFFFF) + ?INT64_MIN.

%%% Static table (frozen for v1)

-spec static_table() -> [binary()].
static_table() ->
    [<<"count">>, <<"duration">>, <<"monotonic_time">>, <<"system_time">>, <<"bytes">>,
     <<"duration_ms">>, <<"duration_us">>, <<"queue_len">>, <<"queue_size">>,
     <<"operations_committed">>, <<"startup_time_ms">>, <<"sockets">>, <<"value">>, <<"size">>,
     <<"telemetry_span_context">>, <<"node_id">>, <<"view_number">>, <<"status">>,
     <<"cluster_size">>, <<"op_number">>, <<"commit_number">>, <<"is_primary">>, <<"node">>,
     <<"name">>, <<"reason">>, <<"result">>, <<"error">>, <<"kind">>, <<"stacktrace">>,
     <<"error_context">>, <<"tenant_id">>, <<"policy_id">>, <<"provider_id">>,
     <<"correlation_id">>, <<"table">>, <<"pool">>, <<"worker_id">>, <<"sender">>,
     <<"operation">>, <<"client_id">>, <<"request_id">>, <<"old_status">>, <<"new_status">>,
     <<"old_view">>, <<"new_view">>, <<"ok">>, <<"undefined">>, <<"nil">>, <<"normal">>,
     <<"view_change">>, <<"uninitialized">>, <<"primary">>, <<"backup">>, <<"device">>,
     <<"exit_code">>, <<"listen_addrs">>, <<"ip">>, <<"port">>, <<"channel">>, <<"config">>,
     <<"message">>, <<"type">>, <<"id">>, <<"host">>].

static_ref(Text) ->
    case persistent_term:get({?MODULE, static}, undefined) of
        undefined ->
            Index = maps:from_list(lists:zip(static_table(), lists:seq(0, ?STATIC_STRINGS - 1))),
            persistent_term:put({?MODULE, static}, Index),
            maps:get(Text, Index, undefined);
        Index ->
            maps:get(Text, Index, undefined)
    end.
