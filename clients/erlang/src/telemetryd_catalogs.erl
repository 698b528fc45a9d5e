%% The events of telemetryd's built-in catalogs (config/catalogs/*.yaml), as :telemetry event
%% names, so that a handler can be attached to every event of a catalog. A test compares these
%% lists with the catalog files; update both together.
-module(telemetryd_catalogs).

-export([names/0, events/1]).

-type catalog() :: vsr | partisan | snakepit | router_core.
-export_type([catalog/0]).

%% The built-in catalogs.
-spec names() -> [catalog()].
names() -> [vsr, partisan, snakepit, router_core].

%% Every event a catalog declares, in the catalog's order.
-spec events(catalog()) -> [[atom(), ...]].
events(vsr) ->
    [[vsr, leadership, start],
     [vsr, leadership, stop],
     [vsr, protocol, client_request, start],
     [vsr, protocol, client_request, stop],
     [vsr, protocol, client_request, exception],
     [vsr, protocol, prepare, sent],
     [vsr, protocol, prepare, received],
     [vsr, protocol, prepare_ok, sent],
     [vsr, protocol, prepare_ok, received],
     [vsr, protocol, commit, sent],
     [vsr, protocol, commit, received],
     [vsr, state, status_change],
     [vsr, state, view_change],
     [vsr, state, role_change],
     [vsr, state, commit_advance],
     [vsr, view_change, start],
     [vsr, view_change, vote_received],
     [vsr, view_change, do_view_change, sent],
     [vsr, view_change, do_view_change, received],
     [vsr, view_change, complete],
     [vsr, state_machine, operation, start],
     [vsr, state_machine, operation, stop],
     [vsr, state_machine, operation, exception],
     [vsr, state_transfer, request_sent],
     [vsr, state_transfer, request_received],
     [vsr, state_transfer, snapshot_sent],
     [vsr, state_transfer, snapshot_received],
     [vsr, replication, log_append],
     [vsr, replication, log_conflict],
     [vsr, replication, quorum_reached],
     [vsr, timer, heartbeat_sent],
     [vsr, timer, heartbeat_received],
     [vsr, timer, primary_timeout]];
events(partisan) ->
    [[partisan, membership, peer, join],
     [partisan, membership, peer, leave],
     [partisan, membership, peer, up],
     [partisan, membership, peer, down],
     [partisan, membership, peer, channel, up],
     [partisan, membership, peer, channel, down],
     [partisan, channel, configured],
     [partisan, socket, open],
     [partisan, socket, connect],
     [partisan, socket, recv],
     [partisan, socket, send],
     [partisan, socket, close],
     [partisan, socket, tag_msg],
     [partisan, connection, connections],
     [partisan, connection, monitors],
     [partisan, connection, new],
     [partisan, connection, outstanding],
     [partisan, connection, owners],
     [partisan, queue, unacknowledged, count],
     [partisan, queue, unacknowledged, bytes],
     [partisan, queue, retransmitted, count],
     [partisan, queue, retransmitted, bytes],
     [partisan, queue, undelivered, count],
     [partisan, queue, undelivered, bytes],
     [partisan, queue, delivered, count],
     [partisan, queue, delivered, bytes]];
events(snakepit) ->
    [[snakepit, worker, recycled],
     [snakepit, worker, health_check_failed],
     [snakepit, worker, started],
     [snakepit, worker, crash],
     [snakepit, worker, tainted],
     [snakepit, worker, restarted],
     [snakepit, zero_copy, export],
     [snakepit, zero_copy, import],
     [snakepit, zero_copy, fallback],
     [snakepit, python, exception, mapped],
     [snakepit, python, exception, unmapped],
     [snakepit, pool, saturated],
     [snakepit, request, executed]];
events(router_core) ->
    [[router_core, route, start],
     [router_core, route, stop],
     [router_core, route, exception],
     [router_core, routes_total],
     [router_core, resolutions_total],
     [router_core, errors_total],
     [router_policy_store, load_policy],
     [router_policy_store, upsert_policy],
     [router_policy_store, delete_policy],
     [router_policy_store, list_policies]];
events(Other) ->
    erlang:error({unknown_catalog, Other}).
