-- The reference tables take the served apps' own table and column names, as their documents
-- write them, so an app's existing SQL (its order insert, its monitoring queries, its own
-- rollup and auto-complete functions) runs unchanged against them:
--   trading         public.queue (user_id, ticker, order_type, amount_usdp, status, date),
--                   public.issuer_stats_cache and refresh_issuer_stats_cache()
--   challenges      challenges (name, status, end_date), challenge_members,
--                   challenge_member_stats (completion_rate),
--                   notifications (user_id, type, title, body, data)
--   text-to-speech  usage_events (user_id, event_type, characters_processed, "timestamp"),
--                   monthly_usage (user_id, month_start_date, total_characters_processed,
--                   last_updated), unique (user_id, month_start_date)
-- What the handlers need beyond the apps' columns stays as extra columns or tables
-- (notifications.dedupe_key, daily_usage, the orders' processing columns), never as a
-- renamed app column.
--
-- Existing installs move in place (renames keep every row, index, grant and policy); a fresh
-- install runs the same statements after 0001-0008, so both end in the same schema.
-- Written for PostgreSQL 14 through 18, with or without Supabase's roles.

-- -- trading: trade_orders -> queue, created_at -> date -----------------------------------

alter table trade_orders rename to queue;
alter table queue rename column created_at to date;
alter sequence trade_orders_id_seq rename to queue_id_seq;
alter table queue rename constraint trade_orders_pkey to queue_pkey;
alter table queue rename constraint trade_orders_type_check to queue_order_type_check;
alter table queue rename constraint trade_orders_amount_check to queue_amount_usdp_check;
alter table queue rename constraint trade_orders_status_check to queue_status_check;
alter index trade_orders_pending_idx rename to queue_pending_idx;
alter index trade_orders_processed_idx rename to queue_processed_idx;
-- The insert trigger and its function keep their names: they say what they do (enqueue the
-- processing of trade orders), and the access tests and grants know them by these names.

-- The stats cache the trading app refreshes every five minutes with
-- `select refresh_issuer_stats_cache()`: one row per ticker.
create table issuer_stats_cache (
  ticker          text primary key,
  current_price   numeric(20, 8),
  -- the last tick at least 24 hours old; null: none that old
  price_24h_ago   numeric(20, 8),
  change_24h_pct  numeric(12, 4),
  volume_24h_usdp numeric(20, 8) not null default 0,
  trades_24h      integer        not null default 0,
  holders         integer        not null default 0,
  refreshed_at    timestamptz    not null default now()
);
create index price_ticks_ticker_idx on price_ticks (ticker, recorded_at);

-- SECURITY INVOKER: it runs with the rights of whoever calls it (the worker, pg_cron's job
-- owner, an operator in the SQL editor); no one gains anything by calling it. Pinned and
-- schema-qualified all the same. Returns the rows written, which call_function records.
create function refresh_issuer_stats_cache() returns integer
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  written integer;
begin
  insert into public.issuer_stats_cache as s
         (ticker, current_price, price_24h_ago, change_24h_pct, volume_24h_usdp, trades_24h,
          holders, refreshed_at)
  select t.symbol, t.current_price, old.price,
         case when old.price > 0 and t.current_price is not null
              then round((t.current_price - old.price) / old.price * 100, 4) end,
         coalesce(traded.volume, 0), coalesce(traded.trades, 0), coalesce(held.holders, 0),
         now()
    from public.tickers t
    left join lateral (
      select k.price
        from public.price_ticks k
       where k.ticker = t.symbol and k.recorded_at <= now() - interval '24 hours'
       order by k.recorded_at desc, k.id desc
       limit 1) old on true
    left join lateral (
      select sum(q.amount_usdp) as volume, count(*)::integer as trades
        from public.queue q
       where q.ticker = t.symbol and q.status = 'completed'
         and q.processed_at >= now() - interval '24 hours') traded on true
    left join lateral (
      select count(*)::integer as holders
        from public.holdings h
       where h.ticker = t.symbol and h.quantity > 0) held on true
  on conflict (ticker) do update
     set current_price = excluded.current_price, price_24h_ago = excluded.price_24h_ago,
         change_24h_pct = excluded.change_24h_pct, volume_24h_usdp = excluded.volume_24h_usdp,
         trades_24h = excluded.trades_24h, holders = excluded.holders,
         refreshed_at = excluded.refreshed_at;
  get diagnostics written = row_count;
  delete from public.issuer_stats_cache c
   where not exists (select 1 from public.tickers t where t.symbol = c.ticker);
  return written;
end;
$$;

-- -- challenges ---------------------------------------------------------------------------

alter table challenges rename column title to name;
-- The app's end_date is a day (`end_date < CURRENT_DATE`): a challenge's last day, the UTC
-- day of its last moment (an end at midnight belongs to the day before). The start follows.
alter table challenges rename column ends_at to end_date;
alter table challenges
  alter column end_date type date
  using ((end_date at time zone 'UTC') - interval '1 microsecond')::date;
alter table challenges rename column starts_at to start_date;
alter table challenges alter column start_date drop default;
alter table challenges
  alter column start_date type date using (start_date at time zone 'UTC')::date;
alter table challenges alter column start_date set default current_date;

-- The members' completion moves to the app's per-member statistics table.
create table challenge_member_stats (
  challenge_id    bigint        not null,
  user_id         uuid          not null,
  completion_rate numeric(5, 2) not null default 0,
  updated_at      timestamptz   not null default now(),
  primary key (challenge_id, user_id),
  foreign key (challenge_id, user_id)
    references challenge_members (challenge_id, user_id) on delete cascade,
  constraint challenge_member_stats_rate_check check (completion_rate between 0 and 100)
);
insert into challenge_member_stats (challenge_id, user_id, completion_rate)
select challenge_id, user_id, completion_pct from challenge_members;
alter table challenge_members drop column completion_pct;

alter table notifications rename column kind to type;

-- -- text-to-speech -----------------------------------------------------------------------

alter table usage_events rename column occurred_at to "timestamp";
alter index usage_events_occurred_idx rename to usage_events_timestamp_idx;
-- Characters are whole numbers; the reference set's `quantity` held nothing else.
alter table usage_events rename column quantity to characters_processed;
alter table usage_events alter column characters_processed drop default;
alter table usage_events
  alter column characters_processed type integer using round(characters_processed)::integer;
alter table usage_events alter column characters_processed set default 0;
-- 'synthesis' was the reference set's name for what the app calls a TTS request: the rollup
-- now counts TTS_REQUEST events only, as the app's own rollup does.
update usage_events set event_type = 'TTS_REQUEST' where event_type = 'synthesis';
alter table usage_events alter column event_type set default 'TTS_REQUEST';

alter table monthly_usage rename column month to month_start_date;
alter table monthly_usage rename column quantity to total_characters_processed;
alter table monthly_usage alter column total_characters_processed drop default;
alter table monthly_usage
  alter column total_characters_processed type bigint
  using round(total_characters_processed)::bigint;
alter table monthly_usage alter column total_characters_processed set default 0;
alter table monthly_usage rename column updated_at to last_updated;
-- The app's monthly_usage has no event count, and rollup_usage writes only the app's
-- columns there (so it works on the app's own table); daily_usage keeps the count per day.
alter table monthly_usage drop column event_count;

alter table daily_usage rename column quantity to characters_processed;
alter table daily_usage
  alter column characters_processed type bigint using round(characters_processed)::bigint;

-- -- access -------------------------------------------------------------------------------
-- The new objects get what every reference object has (row level security; service_role
-- everything), and nothing through Supabase's default privileges: anon and authenticated
-- get no rights here (apps add their own policies and grants for end users).

alter table issuer_stats_cache enable row level security;
alter table challenge_member_stats enable row level security;
revoke all on function refresh_issuer_stats_cache() from public;

do $$
declare
  t text;
begin
  foreach t in array array['issuer_stats_cache', 'challenge_member_stats'] loop
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
    if exists (select 1 from pg_roles where rolname = 'anon') then
      execute format('revoke all on %I from anon', t);
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
      execute format('revoke all on %I from authenticated', t);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant execute on function refresh_issuer_stats_cache() to service_role;
  end if;
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on function refresh_issuer_stats_cache() from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on function refresh_issuer_stats_cache() from authenticated;
  end if;
end;
$$;
