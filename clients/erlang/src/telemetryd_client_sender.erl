%% The sender: a process that takes queued events, batches them into wire v1 frames of at most
%% max_frame_bytes and sends them to telemetryd over UDP or TCP.
%%
%% Callers never wait for it. enqueue/4 (what the :telemetry handler calls) reserves a slot in a
%% bounded queue with one atomic add and writes the event into a public ETS table; when the queue
%% is full the event is dropped and counted. The sender drains the table every flush_interval
%% milliseconds, and sooner when the queue fills up. Counters live in a counters array that outlives
%% sender restarts, found through persistent_term by the sender's name.
-module(telemetryd_client_sender).
-behaviour(gen_server).

-export([start_link/1, parse_options/1, enqueue/4, flush/2, counters/1, ensure_handle/1]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(DEFAULT_UDP_FRAME_BYTES, 1432).  % one unfragmented datagram on a 1500-byte MTU
-define(DEFAULT_TCP_FRAME_BYTES, 65536).
-define(MAX_UDP_FRAME_BYTES, 65507).
-define(MAX_TCP_FRAME_BYTES, 16777216).
-define(MIN_FRAME_BYTES, 64).
-define(DEFAULT_QUEUE_LIMIT, 10000).
-define(TAKE_BATCH, 256).
-define(SEND_TIMEOUT, 5000).

%% Counter slots.
-define(SENT, 1).
-define(DROPPED, 2).
-define(LOST, 3).
-define(INVALID, 4).
-define(SKIPPED, 5).
-define(FRAMES, 6).
-define(BYTES, 7).
-define(SEND_ERRORS, 8).
-define(CONNECT_ERRORS, 9).
-define(CONNECTS, 10).
-define(COUNTER_NAMES, [sent, dropped, lost, invalid, skipped, frames, bytes, send_errors,
                        connect_errors, connects]).

%% What enqueue/4 needs, shared by every caller through persistent_term.
-record(handle, {
    queue :: atomics:atomics_ref(),      % events in the table
    counters :: counters:counters_ref(),
    limit :: pos_integer(),
    wake_at :: pos_integer(),            % queue length at which the sender is woken up
    timed :: boolean()                   % record the system time of each event
}).

-record(state, {
    name :: atom(),
    handle :: #handle{},
    options :: map(),
    frame :: telemetryd_wire:frame(),    % the empty frame new frames start from
    socket :: gen_udp:socket() | gen_tcp:socket() | undefined,
    backoff :: pos_integer(),            % TCP: wait before the next connection attempt
    reconnect_timer :: reference() | undefined,
    handler_id :: term() | undefined     % the :telemetry handler this sender attached
}).

%%% API

-spec start_link(map() | proplists:proplist()) -> {ok, pid()} | {error, term()}.
start_link(Options) ->
    case parse_options(Options) of
        {ok, #{name := Name} = Config} -> gen_server:start_link({local, Name}, ?MODULE, Config, []);
        {error, _} = Error -> Error
    end.

%% Queues one event for the sender called Name. Never blocks, never raises for a well-formed Name:
%% a full queue or a sender that is not running drops the event and counts it.
-spec enqueue(atom(), term(), term(), term()) -> ok.
enqueue(Name, EventName, Measurements, Metadata) ->
    case persistent_term:get({?MODULE, Name}, undefined) of
        #handle{queue = Queue, counters = Counters, limit = Limit, wake_at = WakeAt,
                timed = Timed} ->
            case atomics:add_get(Queue, 1, 1) of
                Length when Length > Limit ->
                    atomics:sub(Queue, 1, 1),
                    counters:add(Counters, ?DROPPED, 1);
                Length ->
                    Time = case Timed of
                               true -> erlang:system_time();
                               false -> undefined
                           end,
                    Entry = {erlang:unique_integer([monotonic]), EventName, Measurements,
                             Metadata, Time},
                    try ets:insert(Name, Entry) of
                        true when Length =:= WakeAt -> wake(Name);
                        true -> ok
                    catch
                        error:badarg ->  % no table: the sender is not running
                            atomics:sub(Queue, 1, 1),
                            counters:add(Counters, ?DROPPED, 1)
                    end
            end;
        undefined ->
            ok
    end.

wake(Name) ->
    try Name ! flush_now of
        _ -> ok
    catch
        error:badarg -> ok
    end.

%% Sends everything queued now. {error, not_connected}: TCP has no connection (the events stay
%% queued until it has one).
-spec flush(atom(), timeout()) -> ok | {error, not_connected}.
flush(Name, Timeout) ->
    gen_server:call(Name, flush, Timeout).

%% The counters of the sender called Name (they survive its restarts).
-spec counters(atom()) -> #{atom() => non_neg_integer()}.
counters(Name) ->
    #handle{queue = Queue, counters = Counters} = ensure_handle(Name),
    Values = [counters:get(Counters, I) || I <- lists:seq(1, length(?COUNTER_NAMES))],
    maps:from_list([{queued, max(0, atomics:get(Queue, 1))}
                    | lists:zip(?COUNTER_NAMES, Values)]).

%% The shared state for Name, created with default limits if no sender has started yet, so that
%% events that arrive before the sender are counted.
-spec ensure_handle(atom()) -> #handle{}.
ensure_handle(Name) ->
    case persistent_term:get({?MODULE, Name}, undefined) of
        #handle{} = Handle ->
            Handle;
        undefined ->
            Handle = #handle{queue = atomics:new(1, [{signed, true}]),
                             counters = counters:new(length(?COUNTER_NAMES), [write_concurrency]),
                             limit = ?DEFAULT_QUEUE_LIMIT,
                             wake_at = wake_at(?DEFAULT_QUEUE_LIMIT),
                             timed = false},
            persistent_term:put({?MODULE, Name}, Handle),
            Handle
    end.

wake_at(Limit) -> max(1, min(Limit div 2, 512)).

%%% Options

-define(DEFAULTS, #{name => telemetryd_client,
                    host => "127.0.0.1",
                    port => 7625,
                    transport => udp,
                    max_frame_bytes => 0,
                    flush_interval => 100,
                    queue_limit => ?DEFAULT_QUEUE_LIMIT,
                    include_time => false,
                    connect_timeout => 2000,
                    reconnect_min => 100,
                    reconnect_max => 10000,
                    events => [],
                    catalogs => [],
                    handler_id => default}).

%% Validates options (a map or a proplist, e.g. an Elixir keyword list) and fills in defaults.
-spec parse_options(map() | proplists:proplist()) -> {ok, map()} | {error, term()}.
parse_options(Options) when is_list(Options) ->
    case lists:all(fun(O) -> is_tuple(O) andalso tuple_size(O) =:= 2 end, Options) of
        true -> parse_options(maps:from_list(Options));
        false -> {error, {invalid_options, Options}}
    end;
parse_options(Options) when is_map(Options) ->
    case maps:keys(maps:without(maps:keys(?DEFAULTS), Options)) of
        [] -> check(maps:to_list(maps:merge(?DEFAULTS, Options)), #{});
        Unknown -> {error, {unknown_options, lists:sort(Unknown)}}
    end;
parse_options(Options) ->
    {error, {invalid_options, Options}}.

check([], Config) ->
    finish_options(Config);
check([{Key, Value} | Rest], Config) ->
    case check_option(Key, Value) of
        {ok, Checked} -> check(Rest, Config#{Key => Checked});
        error -> {error, {invalid_option, Key, Value}}
    end.

check_option(name, V) when is_atom(V), V =/= undefined -> {ok, V};
check_option(host, V) when is_binary(V) -> check_option(host, binary_to_list(V));
check_option(host, V) when is_list(V); is_tuple(V) ->
    case resolve(V) of
        {ok, Address} -> {ok, Address};
        {error, _} -> error
    end;
check_option(port, V) when is_integer(V), V >= 1, V =< 65535 -> {ok, V};
check_option(transport, V) when V =:= udp; V =:= tcp -> {ok, V};
check_option(max_frame_bytes, V) when is_integer(V), V >= 0 -> {ok, V};
check_option(flush_interval, V) when is_integer(V), V >= 1 -> {ok, V};
check_option(queue_limit, V) when is_integer(V), V >= 1 -> {ok, V};
check_option(include_time, V) when is_boolean(V) -> {ok, V};
check_option(connect_timeout, V) when is_integer(V), V >= 1 -> {ok, V};
check_option(reconnect_min, V) when is_integer(V), V >= 1 -> {ok, V};
check_option(reconnect_max, V) when is_integer(V), V >= 1 -> {ok, V};
check_option(events, V) when is_list(V) ->
    case lists:all(fun valid_event_name/1, V) of
        true -> {ok, V};
        false -> error
    end;
check_option(catalogs, V) when is_list(V) ->
    case lists:all(fun(C) -> lists:member(C, telemetryd_catalogs:names()) end, V) of
        true -> {ok, V};
        false -> error
    end;
check_option(handler_id, V) -> {ok, V};
check_option(_, _) -> error.

valid_event_name([_ | _] = Name) -> lists:all(fun is_atom/1, Name);
valid_event_name(_) -> false.

finish_options(#{transport := Transport, max_frame_bytes := Max0, reconnect_min := Min,
                 reconnect_max := MaxBackoff, name := Name, handler_id := Id} = Config) ->
    Limit = case Transport of
                udp -> ?MAX_UDP_FRAME_BYTES;
                tcp -> ?MAX_TCP_FRAME_BYTES
            end,
    Max = case {Max0, Transport} of
              {0, udp} -> ?DEFAULT_UDP_FRAME_BYTES;
              {0, tcp} -> ?DEFAULT_TCP_FRAME_BYTES;
              _ -> Max0
          end,
    HandlerId = case Id of
                    default -> {telemetryd_client, Name};
                    _ -> Id
                end,
    if
        Max < ?MIN_FRAME_BYTES; Max > Limit ->
            {error, {invalid_option, max_frame_bytes, Max0}};
        Min > MaxBackoff ->
            {error, {invalid_option, reconnect_min, Min}};
        true ->
            {ok, Config#{max_frame_bytes := Max, handler_id := HandlerId}}
    end.

resolve(Host) when is_tuple(Host) ->
    case inet:ntoa(Host) of
        {error, _} = Error -> Error;
        _ -> {ok, Host}
    end;
resolve(Host) ->
    case inet:parse_address(Host) of
        {ok, Address} ->
            {ok, Address};
        {error, _} ->
            case inet:getaddr(Host, inet) of
                {ok, Address} -> {ok, Address};
                {error, _} -> inet:getaddr(Host, inet6)
            end
    end.

%%% gen_server

init(#{name := Name, transport := Transport, host := Address, queue_limit := Limit,
       include_time := Timed, max_frame_bytes := MaxBytes, reconnect_min := Min} = Options) ->
    process_flag(trap_exit, true),
    _ = ets:new(Name, [ordered_set, public, named_table, {write_concurrency, true}]),
    Handle = update_handle(Name, Limit, Timed),
    atomics:put(Handle#handle.queue, 1, 0),
    Units = erlang:convert_time_unit(1, second, native),
    State = #state{name = Name, handle = Handle, options = Options,
                   frame = telemetryd_wire:new_frame(#{units_per_second => Units,
                                                       max_frame_bytes => MaxBytes}),
                   backoff = Min},
    case open(Transport, Address) of
        {ok, Socket} ->
            case attach(Options) of
                {ok, HandlerId} ->
                    schedule_flush(Options),
                    State1 = State#state{socket = Socket, handler_id = HandlerId},
                    case Transport of
                        udp -> {ok, State1};
                        tcp -> {ok, State1, {continue, connect}}
                    end;
                {error, Reason} ->
                    close(Socket),
                    {stop, {attach_failed, Reason}}
            end;
        {error, Reason} ->
            {stop, {open_failed, Reason}}
    end.

update_handle(Name, Limit, Timed) ->
    Old = ensure_handle(Name),
    New = Old#handle{limit = Limit, wake_at = wake_at(Limit), timed = Timed},
    case New =:= Old of
        true -> ok;
        false -> persistent_term:put({?MODULE, Name}, New)
    end,
    New.

%% UDP opens its socket here; TCP connects after init (handle_continue), so undefined for now.
open(udp, Address) ->
    gen_udp:open(0, [binary, {active, false}, family(Address)]);
open(tcp, _) ->
    {ok, undefined}.

family(Address) when tuple_size(Address) =:= 8 -> inet6;
family(_) -> inet.

attach(#{events := [], catalogs := []}) ->
    {ok, undefined};
attach(#{events := Events, catalogs := Catalogs, handler_id := Id, name := Name}) ->
    All = Events ++ lists:append([telemetryd_catalogs:events(C) || C <- Catalogs]),
    try telemetryd_client:attach(All, #{sender => Name, handler_id => Id}) of
        ok -> {ok, Id};
        {error, already_exists} -> {ok, Id};  % left attached by a sender that was killed
        {error, _} = Error -> Error
    catch
        error:undef -> {error, telemetry_not_available}
    end.

handle_continue(connect, State) ->
    {noreply, connect(State)}.

handle_call(flush, _From, #state{options = #{transport := tcp}, socket = undefined} = State) ->
    {reply, {error, not_connected}, State};
handle_call(flush, _From, State) ->
    {reply, ok, drain(State, queued(State))};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Message, State) ->
    {noreply, State}.

handle_info(flush_tick, State) ->
    schedule_flush(State#state.options),
    {noreply, drain(State, queued(State))};
handle_info(flush_now, State) ->
    {noreply, drain(State, queued(State))};
handle_info(reconnect, State) ->
    {noreply, connect(State#state{reconnect_timer = undefined})};
handle_info({tcp, Socket, _Data}, #state{socket = Socket} = State) ->
    _ = inet:setopts(Socket, [{active, once}]),  % the daemon sends nothing; ignore it if it does
    {noreply, State};
handle_info({tcp_closed, Socket}, #state{socket = Socket} = State) ->
    {noreply, disconnected(State)};
handle_info({tcp_error, Socket, _Reason}, #state{socket = Socket} = State) ->
    {noreply, disconnected(State)};
handle_info(_Message, State) ->
    {noreply, State}.

terminate(_Reason, #state{name = Name, handle = Handle} = State) ->
    State1 = drain(State, queued(State)),
    %% What could not be sent is lost; deleting the table makes later events count as dropped.
    Left = ets:select_delete(Name, [{'_', [], [true]}]),
    ets:delete(Name),
    counters:add(Handle#handle.counters, ?LOST, Left),
    atomics:sub(Handle#handle.queue, 1, Left),
    close(State1#state.socket),
    case State1#state.handler_id of
        undefined -> ok;
        Id -> _ = telemetryd_client:detach(#{handler_id => Id}), ok
    end.

%%% Draining the queue into frames

schedule_flush(#{flush_interval := Interval}) ->
    erlang:send_after(Interval, self(), flush_tick).

queued(#state{handle = #handle{queue = Queue}}) ->
    max(0, atomics:get(Queue, 1)).

%% Takes up to Budget events (those queued when the drain began, so that a steady stream of new
%% events cannot keep the sender here) and sends them. Over TCP without a connection the events
%% stay queued.
drain(#state{options = #{transport := tcp}, socket = undefined} = State, _) ->
    State;
drain(State, Budget) ->
    drain(State, Budget, State#state.frame).

drain(#state{options = #{transport := tcp}, socket = undefined} = State, _, Frame) ->
    send_frame(Frame, State);  % the connection broke during this drain: the rest stays queued
drain(#state{name = Name, handle = Handle} = State, Budget, Frame) when Budget > 0 ->
    case ets:select(Name, [{'_', [], ['$_']}], min(Budget, ?TAKE_BATCH)) of
        {Entries, _Continuation} ->
            lists:foreach(fun(Entry) -> ets:delete(Name, element(1, Entry)) end, Entries),
            atomics:sub(Handle#handle.queue, 1, length(Entries)),
            {Frame1, State1} = lists:foldl(fun add_entry/2, {Frame, State}, Entries),
            drain(State1, Budget - length(Entries), Frame1);
        '$end_of_table' ->
            send_frame(Frame, State)
    end;
drain(State, _, Frame) ->
    send_frame(Frame, State).

add_entry({_Key, EventName, Measurements, Metadata, Time}, {Frame, State}) ->
    case telemetryd_wire:event(EventName, Measurements, Metadata, Time) of
        {ok, Event, Skipped} ->
            count(State, ?SKIPPED, Skipped),
            place(Event, Frame, State);
        {error, invalid_name} ->
            count(State, ?INVALID, 1),
            {Frame, State}
    end.

%% Adds an event to the frame, sending the frame first when the event does not fit in it. An
%% event too large for an empty frame loses its largest metadata values one at a time (each
%% counted as skipped) until it fits.
place(Event, Frame, State) ->
    case telemetryd_wire:add(Event, Frame) of
        {ok, Frame1} ->
            {Frame1, State};
        full ->
            place(Event, State#state.frame, send_frame(Frame, State));
        {error, too_large} ->
            case drop_largest_metadata(Event) of
                {ok, Smaller} ->
                    count(State, ?SKIPPED, 1),
                    place(Smaller, Frame, State);
                error ->
                    count(State, ?INVALID, 1),
                    {Frame, State}
            end;
        {error, invalid} ->
            count(State, ?INVALID, 1),
            {Frame, State}
    end.

drop_largest_metadata(#{metadata := []}) ->
    error;
drop_largest_metadata(#{metadata := Metadata} = Event) ->
    Sized = [{erlang:external_size(Value), Entry} || {_, Value} = Entry <- Metadata],
    {_, Largest} = lists:max(Sized),
    {ok, Event#{metadata := lists:delete(Largest, Metadata)}}.

send_frame(Frame, #state{} = State) ->
    case telemetryd_wire:is_empty(Frame) of
        true -> State;
        false -> write(telemetryd_wire:finish(Frame), telemetryd_wire:event_count(Frame), State)
    end.

write(_Bytes, Events, #state{socket = undefined} = State) ->
    count(State, ?LOST, Events),
    State;
write(Bytes, Events, #state{options = #{transport := udp, host := Address, port := Port},
                            socket = Socket} = State) ->
    case gen_udp:send(Socket, Address, Port, Bytes) of
        ok ->
            sent(State, Events, byte_size(Bytes));
        {error, _} ->
            count(State, ?SEND_ERRORS, 1),
            count(State, ?LOST, Events),
            State
    end;
write(Bytes, Events, #state{options = #{transport := tcp}, socket = Socket} = State) ->
    case gen_tcp:send(Socket, Bytes) of  % {packet, 4}: a 4-byte big-endian length goes first
        ok ->
            sent(State, Events, 4 + byte_size(Bytes));
        {error, _} ->
            count(State, ?SEND_ERRORS, 1),
            count(State, ?LOST, Events),
            disconnected(State)
    end.

sent(State, Events, Bytes) ->
    count(State, ?SENT, Events),
    count(State, ?FRAMES, 1),
    count(State, ?BYTES, Bytes),
    State.

count(_State, _Slot, 0) -> ok;
count(#state{handle = #handle{counters = Counters}}, Slot, N) -> counters:add(Counters, Slot, N).

%%% TCP connection

connect(#state{options = #{host := Address, port := Port, connect_timeout := Timeout,
                           reconnect_min := Min}} = State) ->
    Options = [binary, {packet, 4}, {active, once}, {nodelay, true}, {keepalive, true},
               {send_timeout, ?SEND_TIMEOUT}, {send_timeout_close, true}, family(Address)],
    case gen_tcp:connect(Address, Port, Options, Timeout) of
        {ok, Socket} ->
            count(State, ?CONNECTS, 1),
            self() ! flush_now,  % what queued up while there was no connection
            State#state{socket = Socket, backoff = Min};
        {error, _} ->
            count(State, ?CONNECT_ERRORS, 1),
            reconnect_later(State)
    end.

disconnected(#state{socket = Socket, options = #{reconnect_min := Min}} = State) ->
    close(Socket),
    reconnect_later(State#state{socket = undefined, backoff = Min}).

%% Waits backoff milliseconds, then doubles it up to reconnect_max.
reconnect_later(#state{reconnect_timer = undefined, backoff = Backoff,
                       options = #{reconnect_max := Max}} = State) ->
    Timer = erlang:send_after(Backoff, self(), reconnect),
    State#state{reconnect_timer = Timer, backoff = min(Backoff * 2, Max)};
reconnect_later(State) ->
    State.

close(undefined) -> ok;
close(Socket) -> inet:close(Socket).
