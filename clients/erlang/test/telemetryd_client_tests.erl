%% The sender and the handler over real loopback sockets: what arrives is read back with
%% telemetryd_test_frame. Each test uses its own sender name, since counters outlive senders.
-module(telemetryd_client_tests).

-include_lib("eunit/include/eunit.hrl").

-define(LOOPBACK, {127, 0, 0, 1}).

%%% Helpers

udp_receiver() ->
    {ok, Socket} = gen_udp:open(0, [binary, {active, false}, {ip, ?LOOPBACK},
                                    {recbuf, 4 * 1024 * 1024}]),
    {ok, Port} = inet:port(Socket),
    {Socket, Port}.

start(Name, Port, Extra) ->
    {ok, Pid} = telemetryd_client:start_link(maps:merge(#{name => Name, port => Port}, Extra)),
    unlink(Pid),
    Pid.

stop(Name) ->
    ok = gen_server:stop(Name).

emit(Name, EventName, Measurements, Metadata) ->
    telemetryd_client:handle_event(EventName, Measurements, Metadata, #{sender => Name}).

%% Datagrams until N events arrived (or Timeout ms passed): [{Bytes, DecodedFrame}].
recv_frames(Socket, N, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    recv_frames(Socket, N, Deadline, []).

recv_frames(_, N, _, Acc) when N =< 0 ->
    lists:reverse(Acc);
recv_frames(Socket, N, Deadline, Acc) ->
    Wait = max(0, Deadline - erlang:monotonic_time(millisecond)),
    case gen_udp:recv(Socket, 0, Wait) of
        {ok, {_, _, Bytes}} ->
            Frame = telemetryd_test_frame:decode(Bytes),
            recv_frames(Socket, N - length(maps:get(events, Frame)), Deadline,
                        [{Bytes, Frame} | Acc]);
        {error, timeout} ->
            lists:reverse(Acc)
    end.

events_of(Frames) -> lists:append([maps:get(events, F) || {_, F} <- Frames]).

%% Nothing more arrives within Wait ms.
silent(Socket, Wait) ->
    ?assertEqual({error, timeout}, gen_udp:recv(Socket, 0, Wait)).

native_units() -> erlang:convert_time_unit(1, second, native).

%%% UDP

%% One event, flushed by the timer alone, arrives whole: the VM's native unit in the header, the
%% span context as the reference's external format.
udp_event_arrives_on_the_timer_test() ->
    {Socket, Port} = udp_receiver(),
    start(t_udp_timer, Port, #{flush_interval => 20}),
    Ref = make_ref(),
    emit(t_udp_timer, [vsr, leadership, start],
         #{monotonic_time => -576460751, system_time => 1764000000123456789},
         #{telemetry_span_context => Ref, node_id => <<"n1">>, status => normal,
           is_primary => true, view_number => 4}),
    [{_, Frame}] = recv_frames(Socket, 1, 2000),
    ?assertEqual(native_units(), maps:get(units_per_second, Frame)),
    [Event] = maps:get(events, Frame),
    ?assertEqual(<<"vsr.leadership.start">>, maps:get(name, Event)),
    ?assertEqual(undefined, maps:get(time, Event)),
    ?assertEqual([{<<"monotonic_time">>, {int, -576460751}},
                  {<<"system_time">>, {int, 1764000000123456789}}],
                 lists:sort(maps:get(measurements, Event))),
    ?assertEqual([{<<"is_primary">>, true},
                  {<<"node_id">>, {string, <<"n1">>}},
                  {<<"status">>, {atom, <<"normal">>}},
                  {<<"telemetry_span_context">>, {bytes, term_to_binary(Ref)}},
                  {<<"view_number">>, {int, 4}}],
                 lists:sort(maps:get(metadata, Event))),
    ?assertMatch(#{sent := 1, frames := 1, queued := 0, dropped := 0, lost := 0},
                 telemetryd_client:counters(t_udp_timer)),
    stop(t_udp_timer),
    gen_udp:close(Socket).

%% Many events go out in frames within the budget, in the order they were emitted.
udp_frames_per_budget_test() ->
    {Socket, Port} = udp_receiver(),
    start(t_udp_mtu, Port, #{max_frame_bytes => 200, flush_interval => 60000}),
    [emit(t_udp_mtu, [app, request, done], #{seq => I}, #{request_id => integer_to_binary(I)})
     || I <- lists:seq(1, 300)],
    ok = telemetryd_client:flush(t_udp_mtu),
    Frames = recv_frames(Socket, 300, 5000),
    ?assert(length(Frames) > 10),
    [?assert(byte_size(Bytes) =< 200) || {Bytes, _} <- Frames],
    ?assertEqual(lists:seq(1, 300),
                 [Seq || #{measurements := [{<<"seq">>, {int, Seq}}]} <- events_of(Frames)]),
    Counters = telemetryd_client:counters(t_udp_mtu),
    ?assertMatch(#{sent := 300, queued := 0, dropped := 0}, Counters),
    ?assertEqual(length(Frames), maps:get(frames, Counters)),
    ?assertEqual(lists:sum([byte_size(B) || {B, _} <- Frames]), maps:get(bytes, Counters)),
    stop(t_udp_mtu),
    gen_udp:close(Socket).

%% A full queue drops and counts without making the caller wait, even while the sender is stuck;
%% the queued events are sent once it runs again.
full_queue_drops_and_counts_test() ->
    {Socket, Port} = udp_receiver(),
    Pid = start(t_full, Port, #{queue_limit => 100, flush_interval => 60000}),
    ok = sys:suspend(Pid),
    {Micros, _} = timer:tc(fun() ->
                                   [emit(t_full, [app, tick], #{count => 1}, #{n => I})
                                    || I <- lists:seq(1, 10000)]
                           end),
    ?debugFmt("10000 handler calls against a stuck sender took ~b us", [Micros]),
    ?assert(Micros < 2000000),
    ?assertMatch(#{queued := 100, dropped := 9900, sent := 0}, telemetryd_client:counters(t_full)),
    ok = sys:resume(Pid),
    ok = telemetryd_client:flush(t_full),
    Events = events_of(recv_frames(Socket, 100, 5000)),
    %% The first 100 were kept.
    ?assertEqual(lists:seq(1, 100), [N || #{metadata := [{<<"n">>, {int, N}}]} <- Events]),
    silent(Socket, 200),
    ?assertMatch(#{queued := 0, dropped := 9900, sent := 100, lost := 0},
                 telemetryd_client:counters(t_full)),
    stop(t_full),
    gen_udp:close(Socket).

%% Before the timer fires, a burst that fills half the queue wakes the sender.
burst_wakes_the_sender_test() ->
    {Socket, Port} = udp_receiver(),
    start(t_burst, Port, #{queue_limit => 40, flush_interval => 60000}),
    [emit(t_burst, [app, tick], #{count => 1}, #{}) || _ <- lists:seq(1, 20)],
    ?assertEqual(20, length(events_of(recv_frames(Socket, 20, 2000)))),
    stop(t_burst),
    gen_udp:close(Socket).

%% What cannot be sent is skipped and counted, and the rest of the event still goes; an event
%% with an invalid name is counted as invalid; nothing raises into the caller.
unsendable_values_are_skipped_test() ->
    {Socket, Port} = udp_receiver(),
    start(t_skip, Port, #{flush_interval => 60000}),
    ok = emit(t_skip, [app, job, done], #{count => 1, label => <<"x">>},
              #{node_id => <<"n1">>, callback => fun() -> ok end, huge => 1 bsl 80,
                improper => [a | b], pid => self(), text => binary:copy(<<"x">>, 5000)}),
    ok = emit(t_skip, [app, 'bad.', name], #{count => 1}, #{}),
    ok = emit(t_skip, "not a name", #{count => 1}, #{}),
    ok = emit(t_skip, [app, job, done], not_a_map, [not_a_map]),
    ok = telemetryd_client:handle_event([a], #{}, #{}, not_a_config),
    ok = telemetryd_client:flush(t_skip),
    [First, Fourth] = events_of(recv_frames(Socket, 2, 2000)),
    ?assertEqual([{<<"count">>, {int, 1}}], maps:get(measurements, First)),
    ?assertEqual([{<<"node_id">>, {string, <<"n1">>}}, {<<"pid">>, {bytes, term_to_binary(self())}}],
                 lists:sort(maps:get(metadata, First))),
    ?assertMatch(#{measurements := [], metadata := []}, Fourth),
    ?assertMatch(#{sent := 2, invalid := 2, skipped := 7}, telemetryd_client:counters(t_skip)),
    stop(t_skip),
    gen_udp:close(Socket).

%% A metadata value that would not fit in any frame is left out (largest first) so that the event
%% itself is still sent.
oversized_metadata_is_left_out_test() ->
    {Socket, Port} = udp_receiver(),
    start(t_big, Port, #{flush_interval => 60000}),
    emit(t_big, [app, upload], #{bytes => 4000},
         #{body => binary:copy(<<"b">>, 4000), tenant_id => <<"t1">>}),
    ok = telemetryd_client:flush(t_big),
    [Event] = events_of(recv_frames(Socket, 1, 2000)),
    ?assertEqual([{<<"tenant_id">>, {string, <<"t1">>}}], maps:get(metadata, Event)),
    ?assertMatch(#{sent := 1, skipped := 1, invalid := 0}, telemetryd_client:counters(t_big)),
    stop(t_big),
    gen_udp:close(Socket).

%% include_time stamps each event with the system time at the handler call.
include_time_test() ->
    {Socket, Port} = udp_receiver(),
    start(t_time, Port, #{include_time => true, flush_interval => 60000}),
    Before = erlang:system_time(),
    emit(t_time, [app, tick], #{count => 1}, #{}),
    After = erlang:system_time(),
    ok = telemetryd_client:flush(t_time),
    [{_, #{base_time := Base, events := [#{time := Time}]}}] = recv_frames(Socket, 1, 2000),
    ?assertEqual(Base, Time),
    ?assert(Time >= Before andalso Time =< After),
    stop(t_time),
    gen_udp:close(Socket).

%% A stopped sender counts what it could not send, and events for it are then dropped and counted.
stopped_sender_test() ->
    {Socket, Port} = udp_receiver(),
    Pid = start(t_stopped, Port, #{flush_interval => 60000}),
    ok = sys:suspend(Pid),
    emit(t_stopped, [app, tick], #{count => 1}, #{}),
    ok = sys:resume(Pid),
    stop(t_stopped),  % terminate sends what is queued
    ?assertEqual(1, length(events_of(recv_frames(Socket, 1, 2000)))),
    ok = emit(t_stopped, [app, tick], #{count => 1}, #{}),
    ?assertMatch(#{sent := 1, dropped := 1, queued := 0}, telemetryd_client:counters(t_stopped)),
    %% A sender that was never started is not an error either.
    ok = emit(t_never_started, [app, tick], #{count => 1}, #{}),
    gen_udp:close(Socket).

%%% TCP

tcp_listener(Port) ->
    gen_tcp:listen(Port, [binary, {packet, 4}, {active, false}, {ip, ?LOOPBACK},
                          {reuseaddr, true}]).

recv_tcp_events(Socket, N) -> recv_tcp_events(Socket, N, []).

recv_tcp_events(_, N, Acc) when N =< 0 ->
    Acc;
recv_tcp_events(Socket, N, Acc) ->
    {ok, Bytes} = gen_tcp:recv(Socket, 0, 5000),
    Events = maps:get(events, telemetryd_test_frame:decode(Bytes)),
    recv_tcp_events(Socket, N - length(Events), Acc ++ Events).

%% Frames arrive behind their 4-byte length; when the daemon closes the connection the sender
%% connects again and goes on.
tcp_reconnects_after_close_test() ->
    {ok, Listen} = tcp_listener(0),
    {ok, Port} = inet:port(Listen),
    start(t_tcp, Port, #{transport => tcp, flush_interval => 20, reconnect_min => 10}),
    {ok, Conn1} = gen_tcp:accept(Listen, 5000),
    [emit(t_tcp, [app, tick], #{seq => I}, #{}) || I <- lists:seq(1, 3)],
    ?assertEqual([1, 2, 3], [S || #{measurements := [{_, {int, S}}]} <- recv_tcp_events(Conn1, 3)]),
    ok = gen_tcp:close(Conn1),
    {ok, Conn2} = gen_tcp:accept(Listen, 5000),
    [emit(t_tcp, [app, tick], #{seq => I}, #{}) || I <- lists:seq(4, 5)],
    ?assertEqual([4, 5], [S || #{measurements := [{_, {int, S}}]} <- recv_tcp_events(Conn2, 2)]),
    ?assertMatch(#{sent := 5, connects := 2, lost := 0}, telemetryd_client:counters(t_tcp)),
    stop(t_tcp),
    gen_tcp:close(Conn2),
    gen_tcp:close(Listen).

%% With nobody listening, events wait in the queue (flush says not_connected) while the sender
%% retries; once a listener is there they are delivered.
tcp_waits_for_the_daemon_test() ->
    {ok, Probe} = tcp_listener(0),
    {ok, Port} = inet:port(Probe),
    ok = gen_tcp:close(Probe),
    start(t_tcp_down, Port, #{transport => tcp, flush_interval => 20, reconnect_min => 20,
                              reconnect_max => 40}),
    [emit(t_tcp_down, [app, tick], #{seq => I}, #{}) || I <- lists:seq(1, 3)],
    ?assertEqual({error, not_connected}, telemetryd_client:flush(t_tcp_down)),
    timer:sleep(200),
    #{connect_errors := Errors} = Counters = telemetryd_client:counters(t_tcp_down),
    ?assert(Errors >= 2),
    ?assertMatch(#{queued := 3, sent := 0, lost := 0}, Counters),
    {ok, Listen} = tcp_listener(Port),
    {ok, Conn} = gen_tcp:accept(Listen, 5000),
    ?assertEqual([1, 2, 3], [S || #{measurements := [{_, {int, S}}]} <- recv_tcp_events(Conn, 3)]),
    ?assertMatch(#{queued := 0, sent := 3, connects := 1}, telemetryd_client:counters(t_tcp_down)),
    stop(t_tcp_down),
    gen_tcp:close(Conn),
    gen_tcp:close(Listen).

%%% Options and child spec

options_test_() ->
    Start = fun(Options) -> telemetryd_client:start_link(Options#{name => t_options}) end,
    [?_assertEqual({error, {unknown_options, [bogus]}}, Start(#{bogus => 1})),
     ?_assertEqual({error, {invalid_option, port, 0}}, Start(#{port => 0})),
     ?_assertEqual({error, {invalid_option, transport, sctp}}, Start(#{transport => sctp})),
     ?_assertEqual({error, {invalid_option, max_frame_bytes, 70000}},
                   Start(#{max_frame_bytes => 70000})),
     ?_assertEqual({error, {invalid_option, max_frame_bytes, 10}}, Start(#{max_frame_bytes => 10})),
     ?_assertEqual({error, {invalid_option, catalogs, [nope]}}, Start(#{catalogs => [nope]})),
     ?_assertEqual({error, {invalid_option, events, [a]}}, Start(#{events => [a]})),
     ?_assertEqual({error, {invalid_option, host, "no such host.invalid"}},
                   Start(#{host => "no such host.invalid"})),
     ?_assertEqual({error, {invalid_option, reconnect_min, 50}},
                   Start(#{reconnect_min => 50, reconnect_max => 10})),
     ?_assertEqual({error, {invalid_options, [oops]}}, telemetryd_client:start_link([oops]))].

%% An Elixir keyword list works as options; the child spec starts a named worker.
child_spec_test() ->
    {Socket, Port} = udp_receiver(),
    Spec = telemetryd_client:child_spec([{name, t_child}, {host, <<"127.0.0.1">>}, {port, Port}]),
    ?assertMatch(#{id := {telemetryd_client, t_child}, type := worker}, Spec),
    #{start := {M, F, A}} = Spec,
    {ok, Pid} = apply(M, F, A),
    unlink(Pid),
    ?assertEqual(Pid, whereis(t_child)),
    emit(t_child, [app, tick], #{count => 1}, #{}),
    ok = telemetryd_client:flush(t_child),
    ?assertEqual(1, length(events_of(recv_frames(Socket, 1, 2000)))),
    stop(t_child),
    gen_udp:close(Socket).

%% With :telemetry (a rebar3 or mix build) the sender attaches the handler to a catalog's events
%% and telemetry:execute/3 reaches the daemon's socket; without it (the ctest build, where
%% telemetry is not installed) the sender says so instead of starting half-done.
attach_test() ->
    case code:which(telemetry) of
        non_existing ->
            process_flag(trap_exit, true),  % a failed start_link also sends its exit signal
            ?assertEqual({error, {attach_failed, telemetry_not_available}},
                         telemetryd_client:start_link(#{name => t_attach, catalogs => [vsr]})),
            ?assertEqual(undefined, whereis(t_attach));
        _ ->
            {ok, _} = application:ensure_all_started(telemetry),
            {Socket, Port} = udp_receiver(),
            start(t_attach, Port, #{catalogs => [vsr], flush_interval => 20}),
            telemetry:execute([vsr, protocol, prepare, sent], #{count => 2}, #{node_id => <<"n1">>}),
            telemetry:execute([not_in, a_catalog], #{count => 1}, #{}),
            [#{name := Name}] = events_of(recv_frames(Socket, 1, 2000)),
            ?assertEqual(<<"vsr.protocol.prepare.sent">>, Name),
            stop(t_attach),
            %% Stopping the sender detached the handler.
            ?assertEqual([], telemetry:list_handlers([vsr, protocol, prepare, sent])),
            gen_udp:close(Socket)
    end.
