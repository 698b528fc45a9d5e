%% A small JSON reader for the tests (OTP 25 has none): objects become maps with binary keys,
%% arrays lists, strings binaries, numbers integers (of any size) or floats, and null, true and
%% false the atoms null, true and false. Raises {json, Reason, Rest} on malformed input.
-module(telemetryd_test_json).

-export([decode/1, read_file/1]).

read_file(Path) ->
    {ok, Bytes} = file:read_file(Path),
    decode(Bytes).

decode(Bytes) ->
    {Value, Rest} = value(skip(Bytes)),
    case skip(Rest) of
        <<>> -> Value;
        Trailing -> error({json, trailing_bytes, Trailing})
    end.

value(<<${, Rest/binary>>) -> object(skip(Rest), #{});
value(<<$[, Rest/binary>>) -> array(skip(Rest), []);
value(<<$", Rest/binary>>) -> string(Rest, []);
value(<<"true", Rest/binary>>) -> {true, Rest};
value(<<"false", Rest/binary>>) -> {false, Rest};
value(<<"null", Rest/binary>>) -> {null, Rest};
value(<<C, _/binary>> = Bytes) when C =:= $-; C >= $0, C =< $9 -> number(Bytes);
value(Bytes) -> error({json, unexpected, Bytes}).

object(<<$}, Rest/binary>>, Acc) when map_size(Acc) =:= 0 ->
    {Acc, Rest};
object(<<$", Rest/binary>>, Acc) ->
    {Key, Rest1} = string(Rest, []),
    <<$:, Rest2/binary>> = expect(skip(Rest1), $:),
    {Value, Rest3} = value(skip(Rest2)),
    Acc1 = Acc#{Key => Value},
    case skip(Rest3) of
        <<$,, Rest4/binary>> -> object(skip(Rest4), Acc1);
        <<$}, Rest4/binary>> -> {Acc1, Rest4};
        Other -> error({json, bad_object, Other})
    end;
object(Bytes, _) ->
    error({json, bad_object, Bytes}).

array(<<$], Rest/binary>>, []) ->
    {[], Rest};
array(Bytes, Acc) ->
    {Value, Rest} = value(Bytes),
    case skip(Rest) of
        <<$,, Rest1/binary>> -> array(skip(Rest1), [Value | Acc]);
        <<$], Rest1/binary>> -> {lists:reverse([Value | Acc]), Rest1};
        Other -> error({json, bad_array, Other})
    end.

string(<<$", Rest/binary>>, Acc) ->
    {unicode:characters_to_binary(lists:reverse(Acc)), Rest};
string(<<$\\, C, Rest/binary>>, Acc) when C =/= $u ->
    Char = case C of
               $" -> $";
               $\\ -> $\\;
               $/ -> $/;
               $b -> $\b;
               $f -> $\f;
               $n -> $\n;
               $r -> $\r;
               $t -> $\t;
               _ -> error({json, bad_escape, C})
           end,
    string(Rest, [Char | Acc]);
string(<<"\\u", Hex:4/binary, Rest/binary>>, Acc) ->
    case binary_to_integer(Hex, 16) of
        High when High >= 16#D800, High =< 16#DBFF ->
            <<"\\u", Hex2:4/binary, Rest2/binary>> = Rest,
            Low = binary_to_integer(Hex2, 16),
            string(Rest2, [16#10000 + ((High - 16#D800) bsl 10) + (Low - 16#DC00) | Acc]);
        Code ->
            string(Rest, [Code | Acc])
    end;
string(<<C/utf8, Rest/binary>>, Acc) when C >= 16#20 ->
    string(Rest, [C | Acc]);
string(Bytes, _) ->
    error({json, bad_string, Bytes}).

number(Bytes) ->
    {Text, Rest} = lists:splitwith(fun(C) -> lists:member(C, "+-0123456789.eE") end,
                                   binary_to_list(Bytes)),
    Value = case lists:any(fun(C) -> lists:member(C, ".eE") end, Text) of
                true -> float_of(Text);
                false -> list_to_integer(Text)
            end,
    {Value, list_to_binary(Rest)}.

%% Erlang's list_to_float wants a fraction: "1e5" and "2.5E3" need normalising.
float_of(Text) ->
    case string:split(string:lowercase(Text), "e") of
        [Mantissa, Exponent] -> list_to_float(with_fraction(Mantissa) ++ "e" ++ Exponent);
        [Mantissa] -> list_to_float(with_fraction(Mantissa))
    end.

with_fraction(M) ->
    case lists:member($., M) of
        true -> M;
        false -> M ++ ".0"
    end.

expect(<<C, _/binary>> = Bytes, C) -> Bytes;
expect(Bytes, C) -> error({json, {expected, C}, Bytes}).

skip(<<C, Rest/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> skip(Rest);
skip(Bytes) -> Bytes.
