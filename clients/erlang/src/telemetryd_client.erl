%% telemetryd client: a :telemetry handler that sends events to a telemetryd daemon.
%%
%% Start a sender (child_spec/1 in your supervision tree, or start_link/1), then attach the handler
%% to the events to send: with the sender's events and catalogs options, or with attach/2 and
%% attach_catalogs/2. The handler never blocks and never raises: it puts the event in the sender's
%% bounded queue, or drops and counts it when the queue is full. counters/0,1 tell what happened.
-module(telemetryd_client).

-export([child_spec/1, start_link/1, attach/2, attach_catalogs/2, detach/1, handle_event/4,
         counters/0, counters/1, flush/0, flush/1, flush/2]).

-define(DEFAULT_SENDER, telemetryd_client).

%% A child specification for a sender, for a supervisor (Erlang) or a supervision tree (Elixir:
%% `{:telemetryd_client, port: 7625, catalogs: [:vsr]}`). Options: see start_link/1.
-spec child_spec(map() | proplists:proplist()) -> supervisor:child_spec().
child_spec(Options) ->
    Name = option(name, Options, ?DEFAULT_SENDER),
    #{id => {?MODULE, Name},
      start => {?MODULE, start_link, [Options]},
      restart => permanent,
      shutdown => 5000,
      type => worker,
      modules => [telemetryd_client_sender]}.

%% Starts a sender, registered under its name. Options (a map or a proplist):
%%   name (telemetryd_client), host ("127.0.0.1"), port (7625), transport (udp | tcp),
%%   max_frame_bytes (0: 1432 for UDP, 65536 for TCP), flush_interval (100 ms),
%%   queue_limit (10000 events), include_time (false), connect_timeout (2000 ms),
%%   reconnect_min (100 ms), reconnect_max (10000 ms), events ([]), catalogs ([]),
%%   handler_id ({telemetryd_client, Name}).
%% With events or catalogs the sender attaches the handler to them, and detaches it when it stops.
-spec start_link(map() | proplists:proplist()) -> {ok, pid()} | {error, term()}.
start_link(Options) ->
    telemetryd_client_sender:start_link(Options).

%% Attaches the handler to Events (a list of :telemetry event names) with telemetry:attach_many/4.
%% Options: sender (the sender's name, telemetryd_client) and handler_id
%% ({telemetryd_client, Sender}).
-spec attach([[atom(), ...]], map() | proplists:proplist()) -> ok | {error, already_exists}.
attach(Events, Options) ->
    Sender = option(sender, Options, ?DEFAULT_SENDER),
    HandlerId = option(handler_id, Options, {?MODULE, Sender}),
    _ = telemetryd_client_sender:ensure_handle(Sender),
    telemetry:attach_many(HandlerId, Events, fun ?MODULE:handle_event/4, #{sender => Sender}).

%% Attaches the handler to every event of the built-in catalogs named (vsr, partisan, snakepit,
%% router_core).
-spec attach_catalogs([telemetryd_catalogs:catalog()], map() | proplists:proplist()) ->
          ok | {error, already_exists}.
attach_catalogs(Catalogs, Options) ->
    attach(lists:append([telemetryd_catalogs:events(C) || C <- Catalogs]), Options).

%% Detaches a handler attached by attach/2 (same options).
-spec detach(map() | proplists:proplist()) -> ok | {error, not_found}.
detach(Options) ->
    Sender = option(sender, Options, ?DEFAULT_SENDER),
    telemetry:detach(option(handler_id, Options, {?MODULE, Sender})).

%% The :telemetry handler. Queues the event for the sender named in Config and returns at once;
%% it never raises, so :telemetry never detaches it.
-spec handle_event([atom(), ...], map(), map(), map()) -> ok.
handle_event(EventName, Measurements, Metadata, Config) ->
    try
        Sender = case Config of
                     #{sender := Name} when is_atom(Name) -> Name;
                     _ -> ?DEFAULT_SENDER
                 end,
        telemetryd_client_sender:enqueue(Sender, EventName, Measurements, Metadata)
    catch
        _:_ -> ok
    end,
    ok.

%% What the sender has done, since the VM started:
%%   queued: events waiting to be sent; sent: events in frames handed to the socket;
%%   dropped: events refused because the queue was full or the sender was not running;
%%   lost: events taken from the queue whose frame could not be sent (a socket error, a closed
%%   TCP connection, the sender stopping); invalid: events that cannot be encoded at all (the
%%   name is not a list of atoms or breaks the name rules, or the event is too large for a frame
%%   even without metadata); skipped: measurements and metadata entries left out of an event
%%   because their value or key cannot be sent; frames and bytes: what was sent (bytes include
%%   TCP length prefixes); send_errors, connects and connect_errors: socket operations.
-spec counters() -> #{atom() => non_neg_integer()}.
counters() -> counters(?DEFAULT_SENDER).

-spec counters(atom()) -> #{atom() => non_neg_integer()}.
counters(Sender) -> telemetryd_client_sender:counters(Sender).

%% Sends everything queued now (the sender also does so every flush_interval).
-spec flush() -> ok | {error, not_connected}.
flush() -> flush(?DEFAULT_SENDER).

-spec flush(atom()) -> ok | {error, not_connected}.
flush(Sender) -> flush(Sender, 5000).

-spec flush(atom(), timeout()) -> ok | {error, not_connected}.
flush(Sender, Timeout) -> telemetryd_client_sender:flush(Sender, Timeout).

option(Key, Options, Default) when is_map(Options) -> maps:get(Key, Options, Default);
option(Key, Options, Default) when is_list(Options) -> proplists:get_value(Key, Options, Default).
