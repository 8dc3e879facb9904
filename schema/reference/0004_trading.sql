-- The trading app: tickers and their price ticks, hourly OHLC history (snapshot_prices),
-- wallets, holdings and trade orders (process_orders).

create table if not exists tickers (
  symbol           text primary key,
  name             text,
  current_price    numeric(20, 8),
  price_updated_at timestamptz,
  constraint tickers_price_check check (current_price is null or current_price > 0)
);

create table if not exists price_ticks (
  id          bigint generated always as identity primary key,
  ticker      text          not null,
  price       numeric(20, 8) not null,
  recorded_at timestamptz   not null default now()
);
create index if not exists price_ticks_recorded_idx on price_ticks (recorded_at);

create table if not exists price_history (
  ticker       text          not null,
  bucket_start timestamptz   not null,  -- the UTC hour the OHLC covers
  open         numeric(20, 8) not null,
  high         numeric(20, 8) not null,
  low          numeric(20, 8) not null,
  close        numeric(20, 8) not null,
  samples      integer       not null,
  recorded_at  timestamptz   not null default now(),
  primary key (ticker, bucket_start)
);

create table if not exists wallets (
  user_id      uuid primary key,
  balance_usdp numeric(20, 8) not null default 0,
  updated_at   timestamptz    not null default now(),
  constraint wallets_balance_check check (balance_usdp >= 0)
);

create table if not exists holdings (
  user_id    uuid           not null,
  ticker     text           not null,
  quantity   numeric(30, 12) not null default 0,
  updated_at timestamptz    not null default now(),
  primary key (user_id, ticker),
  constraint holdings_quantity_check check (quantity >= 0)
);

create table if not exists trade_orders (
  id                bigint generated always as identity primary key,
  user_id           uuid           not null,
  ticker            text           not null,
  order_type        text           not null,
  amount_usdp       numeric(20, 8) not null,
  status            text           not null default 'pending',
  failure_reason    text,
  executed_price    numeric(20, 8),
  executed_quantity numeric(30, 12),
  created_at        timestamptz    not null default now(),
  processed_at      timestamptz,
  constraint trade_orders_type_check check (order_type in ('buy', 'sell')),
  constraint trade_orders_amount_check check (amount_usdp > 0),
  constraint trade_orders_status_check check (status in ('pending', 'completed', 'failed'))
);
create index if not exists trade_orders_pending_idx
  on trade_orders (created_at, id) where status = 'pending';
create index if not exists trade_orders_processed_idx
  on trade_orders (processed_at) where status <> 'pending';

-- A new pending order enqueues one coalesced process_orders job, so orders are processed
-- within milliseconds (the trading app's webhook did this before).
--
-- Coalescing: the job's dedupe key names the newest *running* process_orders job, so
--   * while none runs, every insert shares one pending job ('process_orders:after:0');
--   * while one runs (and may already have made its last "anything left?" check), inserts
--     share one pending follow-up ('process_orders:after:<running id>').
-- The trigger holds a FOR KEY SHARE lock on the pending job it relies on until this
-- transaction ends. Claims use FOR UPDATE SKIP LOCKED, so no worker can take that job
-- before these orders are committed and visible to it. Share locks do not conflict with
-- each other: concurrent order inserts do not wait on one another.
-- SECURITY DEFINER: end users (Supabase `authenticated`) insert orders but have no rights
-- on job_queue.
create or replace function trade_orders_enqueue_processing() returns trigger
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
declare
  newest_running bigint;
  key            text;
  job_id         bigint;
begin
  if not exists (select 1 from inserted where status = 'pending') then
    return null;
  end if;
  for attempt in 1..5 loop
    select max(j.id) into newest_running
      from public.job_queue j
     where j.status = 'running' and j.task_type = 'process_orders';
    key := 'process_orders:after:' || coalesce(newest_running, 0);
    select j.id into job_id
      from public.job_queue j
     where j.dedupe_key = key and j.status = 'pending'
       for key share of j;
    if job_id is not null then
      return null;
    end if;
    job_id := public.job_queue_enqueue('process_orders', '{}'::jsonb, dedupe_key => key);
    -- Our own insert (invisible to workers until we commit), or a job another transaction
    -- committed meanwhile: hold it pending until we commit. If a worker took it already,
    -- go round again: that job is now the newest running one.
    perform 1 from public.job_queue j where j.id = job_id and j.status = 'pending'
      for key share of j;
    if found then
      return null;
    end if;
  end loop;
  return null;
end;
$$;

drop trigger if exists trade_orders_enqueue_processing on trade_orders;
create trigger trade_orders_enqueue_processing
  after insert on trade_orders
  referencing new table as inserted
  for each statement execute function trade_orders_enqueue_processing();

revoke all on function trade_orders_enqueue_processing() from public;

do $$
declare
  t text;
begin
  foreach t in array array['tickers', 'price_ticks', 'price_history', 'wallets', 'holdings',
                           'trade_orders'] loop
    execute format('alter table %I enable row level security', t);
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
  end loop;
end;
$$;
