%% The telemetryd_client application: starts the senders listed in its `senders` environment
%% (a list of sender options, see telemetryd_client:start_link/1), usually none, since an
%% application rather puts telemetryd_client:child_spec/1 in its own supervision tree.
-module(telemetryd_client_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    telemetryd_client_sup:start_link(application:get_env(telemetryd_client, senders, [])).

stop(_State) ->
    ok.
