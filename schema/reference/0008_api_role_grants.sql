-- The API roles' rights on every reference object, stated in one place and independent of
-- default privileges (as schema/0007_api_role_grants.sql does for the core objects).
--
-- Fixes what Supabase's default privileges (every table, sequence and function `postgres`
-- creates in public granted to anon, authenticated and service_role) left open, because
-- the earlier reference migrations revoked from PUBLIC only:
--   * anon and authenticated could execute the SECURITY DEFINER functions
--     refresh_challenge_stats() (a REFRESH MATERIALIZED VIEW as the owner, for anyone with
--     the public anon key) and trade_orders_enqueue_processing();
--   * they held every right on every reference table, TRUNCATE among them, which row
--     level security does not stop; and on the identity sequences;
--   * authenticated could read the challenge_stats materialized view (no RLS there).
-- Here each of the three loses every right on every reference object, then gets exactly
-- this: service_role everything on the tables, reads the statistics view, uses the
-- sequences and calls refresh_challenge_stats() (the refresh_metrics handler does, when
-- the worker connects as service_role); anon and authenticated nothing (apps grant their
-- end users what they need, with policies). Objects are named one by one: public also
-- holds the app's own tables.
do $$
declare
  tables constant text :=
    'public.profiles, public.notifications, '
    'public.wearable_connections, public.wearable_samples, public.activity_logs, '
    'public.competitors, public.competitor_game_stats, '
    'public.tickers, public.price_ticks, public.price_history, public.wallets, '
    'public.holdings, public.trade_orders, '
    'public.challenges, public.challenge_members, public.challenge_stats, '
    'public.usage_events, public.daily_usage, public.monthly_usage';
  sequences constant text :=
    'public.notifications_id_seq, public.wearable_connections_id_seq, '
    'public.activity_logs_id_seq, public.competitors_id_seq, public.price_ticks_id_seq, '
    'public.trade_orders_id_seq, public.challenges_id_seq, public.usage_events_id_seq';
  functions constant text :=
    'public.refresh_challenge_stats(), public.trade_orders_enqueue_processing()';
  api_role text;
begin
  execute format('revoke all on function %s from public', functions);
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on table %s from %I', tables, api_role);
      execute format('revoke all on sequence %s from %I', sequences, api_role);
      execute format('revoke all on function %s from %I', functions, api_role);
    end if;
  end loop;

  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.profiles, public.notifications, public.wearable_connections,
      public.wearable_samples, public.activity_logs, public.competitors,
      public.competitor_game_stats, public.tickers, public.price_ticks, public.price_history,
      public.wallets, public.holdings, public.trade_orders, public.challenges,
      public.challenge_members, public.usage_events, public.daily_usage, public.monthly_usage
      to service_role;
    grant select on table public.challenge_stats to service_role;
    execute format('grant usage, select on sequence %s to service_role', sequences);
    grant execute on function public.refresh_challenge_stats() to service_role;
  end if;
end;
$$;
