%% Reads a wire v1 frame back for the sender tests (what arrived on a real socket), following
%% docs/wire-format.md. Strict: anything unexpected raises, so that a test reading a bad frame fails.
-module(telemetryd_test_frame).

-export([decode/1]).

%% #{units_per_second, base_time (or undefined), strings, events}; each event is
%% #{name, time (or undefined), measurements, metadata} in the typed form of telemetryd_wire.
decode(<<16#D7, 16#1E, 1, Flags, Rest0/binary>>) when Flags =:= 0; Flags =:= 1 ->
    {Units, Rest1} = varint(Rest0),
    {Base, Rest2} = case Flags of
                        1 -> zigzag(Rest1);
                        0 -> {undefined, Rest1}
                    end,
    {StringCount, Rest3} = varint(Rest2),
    {Strings, Rest4} = strings(StringCount, Rest3, []),
    Table = list_to_tuple(telemetryd_wire:static_table() ++ Strings),
    {EventCount, Rest5} = varint(Rest4),
    {Events, <<>>} = events(EventCount, Rest5, Table, Base, []),
    #{units_per_second => Units, base_time => Base, strings => Strings, events => Events}.

strings(0, Rest, Acc) ->
    {lists:reverse(Acc), Rest};
strings(N, Bytes, Acc) ->
    {Length, Rest} = varint(Bytes),
    <<S:Length/binary, Rest1/binary>> = Rest,
    strings(N - 1, Rest1, [S | Acc]).

events(0, Rest, _, _, Acc) ->
    {lists:reverse(Acc), Rest};
events(N, Bytes, Table, Base, Acc) ->
    {Length, Rest} = varint(Bytes),
    <<Body:Length/binary, Rest1/binary>> = Rest,
    events(N - 1, Rest1, Table, Base, [event(Body, Table, Base) | Acc]).

event(Body, Table, Base) ->
    {NameRef, <<Flags, Rest0/binary>>} = varint(Body),
    {Time, Rest1} = case Flags of
                        1 ->
                            {Delta, R} = zigzag(Rest0),
                            {Delta + case Base of undefined -> 0; _ -> Base end, R};
                        0 ->
                            {undefined, Rest0}
                    end,
    {MCount, Rest2} = varint(Rest1),
    {Measurements, Rest3} = measurements(MCount, Rest2, Table, []),
    {DCount, Rest4} = varint(Rest3),
    {Metadata, <<>>} = metadata(DCount, Rest4, Table, []),
    #{name => string(NameRef, Table), time => Time, measurements => Measurements,
      metadata => Metadata}.

measurements(0, Rest, _, Acc) ->
    {lists:reverse(Acc), Rest};
measurements(N, Bytes, Table, Acc) ->
    {KeyKind, Rest} = varint(Bytes),
    Key = string(KeyKind bsr 1, Table),
    {Value, Rest1} = case KeyKind band 1 of
                         0 -> {I, R} = zigzag(Rest), {{int, I}, R};
                         1 -> <<F:64/float-little, R/binary>> = Rest, {{float, F}, R}
                     end,
    measurements(N - 1, Rest1, Table, [{Key, Value} | Acc]).

metadata(0, Rest, _, Acc) ->
    {lists:reverse(Acc), Rest};
metadata(N, Bytes, Table, Acc) ->
    {KeyRef, Rest} = varint(Bytes),
    {Value, Rest1} = term(Rest, Table),
    metadata(N - 1, Rest1, Table, [{string(KeyRef, Table), Value} | Acc]).

term(<<0, Rest/binary>>, _) -> {nil, Rest};
term(<<1, Rest/binary>>, _) -> {false, Rest};
term(<<2, Rest/binary>>, _) -> {true, Rest};
term(<<3, Rest/binary>>, _) -> {I, R} = zigzag(Rest), {{int, I}, R};
term(<<4, F:64/float-little, Rest/binary>>, _) -> {{float, F}, Rest};
term(<<5, Rest/binary>>, Table) -> {Ref, R} = varint(Rest), {{string, string(Ref, Table)}, R};
term(<<6, Rest/binary>>, Table) -> {Ref, R} = varint(Rest), {{atom, string(Ref, Table)}, R};
term(<<7, Rest/binary>>, _) ->
    {Length, R} = varint(Rest),
    <<B:Length/binary, R1/binary>> = R,
    {{bytes, B}, R1};
term(<<Tag, Rest/binary>>, Table) when Tag =:= 8; Tag =:= 9 ->
    {Count, R} = varint(Rest),
    {Items, R1} = terms(Count, R, Table, []),
    {{case Tag of 8 -> list; 9 -> tuple end, Items}, R1};
term(<<10, Rest/binary>>, Table) ->
    {Count, R} = varint(Rest),
    {Items, R1} = terms(2 * Count, R, Table, []),
    {{map, pairs(Items)}, R1};
term(<<Tag, Rest/binary>>, _) when Tag >= 16#40, Tag =< 16#7F -> {{int, Tag - 16#40}, Rest}.

terms(0, Rest, _, Acc) -> {lists:reverse(Acc), Rest};
terms(N, Bytes, Table, Acc) -> {T, Rest} = term(Bytes, Table), terms(N - 1, Rest, Table, [T | Acc]).

pairs([]) -> [];
pairs([K, V | Rest]) -> [{K, V} | pairs(Rest)].

string(Ref, Table) -> element(Ref + 1, Table).

varint(Bytes) -> varint(Bytes, 0, 0).
varint(<<1:1, Low:7, Rest/binary>>, Shift, Acc) -> varint(Rest, Shift + 7, Acc bor (Low bsl Shift));
varint(<<0:1, Low:7, Rest/binary>>, Shift, Acc) -> {Acc bor (Low bsl Shift), Rest}.

zigzag(Bytes) ->
    {N, Rest} = varint(Bytes),
    {case N band 1 of 0 -> N bsr 1; 1 -> -(N bsr 1) - 1 end, Rest}.
