-- The bundled handlers' SECURITY DEFINER functions: pinned like the worker's own (see
-- schema/0004_access.sql). Pinned to `pg_catalog, public`, `'...' || coalesce(id, 0)` in the
-- trade_orders trigger would pick a `public.|| (text, bigint)` operator created by any role
-- that may create objects in public, and run it as the owner. Their bodies qualify every
-- name, so public is not needed.
alter function trade_orders_enqueue_processing() set search_path = pg_catalog, pg_temp;
alter function refresh_challenge_stats() set search_path = pg_catalog, pg_temp;
