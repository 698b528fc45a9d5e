%% Supervises the senders configured in the application environment.
-module(telemetryd_client_sup).
-behaviour(supervisor).

-export([start_link/1, init/1]).

start_link(Senders) ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, Senders).

init(Senders) ->
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10},
          [telemetryd_client:child_spec(Options) || Options <- Senders]}}.
