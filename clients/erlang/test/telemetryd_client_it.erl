%% The Erlang side of tests/erlang_client_integration_test.cc: an Erlang node that starts a sender
%% pointed at a real telemetryd and calls the handler exactly as :telemetry would
%% (handle_event(EventName, Measurements, Metadata, Config)). The C++ test checks /metrics.
%%
%%   erl -noshell -pa EBIN -eval 'telemetryd_client_it:main()' -extra MODE udp|tcp PORT GO_FILE
%%
%% Modes:
%%   scenario  events of the four built-in catalogs in two phases: span starts, then (once GO_FILE
%%             exists) the stops and the rest. The C++ test asserts the series these values give.
%%   overflow  10000 events against a suspended sender with a queue of 100, then a flush.
%%   catalogs  one event with a count of 1 for every event of telemetryd_catalogs.
%% Prints "phase1 ...", "counters ..." and "done"; exits 0, or 1 with the reason on a failure.
-module(telemetryd_client_it).

-export([main/0]).

-define(SENDER, telemetryd_client).

main() ->
    try run(init:get_plain_arguments()) of
        ok ->
            say("done"),
            halt(0)
    catch
        Class:Reason:Stack ->
            say("failed ~p:~p ~p", [Class, Reason, Stack]),
            halt(1)
    end.

run([Mode, Transport, Port | Rest]) ->
    {ok, _} = telemetryd_client:start_link(#{transport => list_to_atom(Transport),
                                             port => list_to_integer(Port),
                                             queue_limit => queue_limit(Mode),
                                             flush_interval => 50}),
    wait_connected(Transport, 200),
    run(Mode, Rest).

queue_limit("overflow") -> 100;
queue_limit(_) -> 10000.

%% Over TCP the connection is made after start; events queue meanwhile, but the test's counts
%% are easier to read with the connection up first.
wait_connected("tcp", 0) -> error(no_connection);
wait_connected("tcp", Tries) ->
    case telemetryd_client:counters() of
        #{connects := 0} -> timer:sleep(25), wait_connected("tcp", Tries - 1);
        _ -> ok
    end;
wait_connected(_, _) -> ok.

run("scenario", [GoFile]) ->
    Spans = start_spans(),
    flushed(3),
    say("phase1 sent=3"),
    wait_for_file(GoFile, 1200),
    Count = stop_spans(Spans) + vsr() + partisan() + snakepit() + router_core(),
    flushed(3 + Count),
    report();
run("overflow", [_]) ->
    Pid = whereis(?SENDER),
    ok = sys:suspend(Pid),
    {Micros, _} = timer:tc(fun() ->
                                   [emit([vsr, replication, log_append], #{count => 1},
                                         common(#{}))
                                    || _ <- lists:seq(1, 10000)]
                           end),
    say("overflow calls=10000 micros=~b", [Micros]),
    ok = sys:resume(Pid),
    flushed(100),
    report();
run("catalogs", [_]) ->
    Events = lists:append([telemetryd_catalogs:events(C) || C <- telemetryd_catalogs:names()]),
    [emit(E, #{count => 1}, #{}) || E <- Events],
    flushed(length(Events)),
    report().

%% What :telemetry would do: call the handler with the event, its measurements and metadata, and
%% the config given to attach_many.
emit(EventName, Measurements, Metadata) ->
    ok = telemetryd_client:handle_event(EventName, Measurements, Metadata, #{sender => ?SENDER}).

%% Waits until the sender has sent Sent events (and nothing is queued).
flushed(Sent) -> flushed(Sent, 200).

flushed(Sent, 0) ->
    error({not_flushed, Sent, telemetryd_client:counters()});
flushed(Sent, Tries) ->
    case telemetryd_client:counters() of
        #{sent := Sent, queued := 0} -> ok;
        _ -> timer:sleep(25), flushed(Sent, Tries - 1)
    end.

report() ->
    Counters = telemetryd_client:counters(),
    say("counters ~s", [lists:join(" ", [io_lib:format("~s=~b", [K, V])
                                         || {K, V} <- lists:sort(maps:to_list(Counters))])]).

wait_for_file(_, 0) ->
    error(no_go_file);
wait_for_file(Path, Tries) ->
    case filelib:is_regular(Path) of
        true -> ok;
        false -> timer:sleep(50), wait_for_file(Path, Tries - 1)
    end.

say(Format) -> say(Format, []).
say(Format, Args) -> io:format(Format ++ "~n", Args).

native(Amount, Unit) -> erlang:convert_time_unit(Amount, Unit, native).

%% The common VSR metadata of node n1, under the event's own.
common(Metadata) ->
    maps:merge(#{node_id => <<"n1">>, view_number => 4, status => normal, cluster_size => 3,
                 op_number => 1200, commit_number => 1199, is_primary => true}, Metadata).

%%% The scenario. Every value here is asserted by the C++ test.

%% Three spans start, each with a make_ref() context as :telemetry.span/3 makes it.
start_spans() ->
    Now = erlang:monotonic_time(),
    Spans = #{leadership => {make_ref(), Now}, operation => {make_ref(), Now + 1},
              route => {make_ref(), Now + 2}},
    start(leadership, [vsr, leadership, start], Spans, common(#{})),
    start(operation, [vsr, state_machine, operation, start], Spans,
          common(#{extra_op_number => 1, operation => <<"put">>})),
    start(route, [router_core, route, start], Spans,
          #{tenant_id => <<"acme">>, policy_id => <<"p1">>}),
    Spans.

start(Span, EventName, Spans, Metadata) ->
    {Ref, Start} = maps:get(Span, Spans),
    emit(EventName, #{monotonic_time => Start, system_time => erlang:system_time()},
         Metadata#{telemetry_span_context => Ref}).

%% The operation took 3 ms (a native-unit duration, as :telemetry.span/3 measures it); the
%% leadership stop says duration 0 as VSR does, and 2 s pass between its monotonic times; the
%% route took 1830 microseconds (Router Core reports microseconds).
stop_spans(Spans) ->
    {OpRef, OpStart} = maps:get(operation, Spans),
    emit([vsr, state_machine, operation, stop],
         #{monotonic_time => OpStart + native(3, millisecond), duration => native(3, millisecond)},
         common(#{telemetry_span_context => OpRef, extra_op_number => 1,
                  operation => <<"put">>})),
    {LeaderRef, LeaderStart} = maps:get(leadership, Spans),
    emit([vsr, leadership, stop],
         #{monotonic_time => LeaderStart + native(2, second), duration => 0},
         common(#{telemetry_span_context => LeaderRef})),
    {RouteRef, RouteStart} = maps:get(route, Spans),
    emit([router_core, route, stop],
         #{monotonic_time => RouteStart + native(1830, microsecond), duration => 1830},
         #{telemetry_span_context => RouteRef, tenant_id => <<"acme">>, policy_id => <<"p1">>,
           provider_id => <<"openai">>, reason => <<"best_score">>, result => ok}),
    3.

vsr() ->
    [emit([vsr, protocol, prepare, sent], #{count => 2}, common(#{})) || _ <- lists:seq(1, 3)],
    emit([vsr, state, status_change], #{count => 1},
         maps:remove(status, common(#{old_status => normal, new_status => view_change}))),
    emit([vsr, state, role_change], #{count => 1}, common(#{is_primary => false})),
    5.

partisan() ->
    Peer = #{name => 'node2@127.0.0.1',
             listen_addrs => [#{ip => {127, 0, 0, 1}, port => 10200}]},
    emit([partisan, membership, peer, join], #{count => 1}, Peer),
    emit([partisan, membership, peer, join], #{count => 1}, Peer),
    emit([partisan, membership, peer, channel, up], #{count => 1, sockets => 4}, #{}),
    emit([partisan, channel, configured], #{count => 1},
         #{name => data, config => #{parallelism => 2, monotonic => false}}),
    [emit([partisan, socket, send], #{}, #{}) || _ <- lists:seq(1, 5)],
    9.

snakepit() ->
    emit([snakepit, zero_copy, export], #{duration_ms => 1.25, bytes => 4096},
         #{kind => dlpack, device => cpu, dtype => float32, shape => [2, 3]}),
    emit([snakepit, zero_copy, export], #{duration_ms => 0.5, bytes => 65536},
         #{kind => dlpack, device => cpu, dtype => float32, shape => [128, 128]}),
    emit([snakepit, request, executed], #{count => 1, duration_us => 1500},
         #{pool => default, worker_id => <<"w1">>, command => <<"predict">>, success => true}),
    emit([snakepit, pool, saturated], #{count => 1, queue_size => 7},
         #{pool => default, available_workers => 0, busy_workers => 4, queue_size => 7}),
    emit([snakepit, worker, recycled], #{count => 1},
         #{worker_id => <<"w1">>, pool => default, reason => ttl_expired, uptime_seconds => 3600,
           request_count => 100}),
    5.

router_core() ->
    emit([router_core, routes_total], #{count => 1},
         #{tenant_id => <<"acme">>, policy_id => <<"p1">>, provider_id => <<"openai">>,
           reason => <<"best_score">>, result => ok}),
    emit([router_core, errors_total], #{count => 1},
         #{tenant_id => <<"acme">>, policy_id => <<"p2">>, error => policy_not_found,
           error_context => #{context => <<"tenant">>, message_id => <<"msg_123">>},
           result => error}),
    emit([router_policy_store, list_policies], #{duration_us => 250, queue_len => 2, count => 12},
         #{tenant_id => <<"acme">>, table => policies, correlation_id => <<"c-1">>}),
    3.
