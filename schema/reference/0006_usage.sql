-- The text-to-speech app: raw usage events, their per-day rollup and the monthly totals
-- the app bills from (rollup_usage).

create table if not exists usage_events (
  id          bigint generated always as identity primary key,
  user_id     uuid          not null,
  event_type  text          not null default 'synthesis',
  quantity    numeric(20, 4) not null default 1,
  occurred_at timestamptz   not null default now()
);
create index if not exists usage_events_occurred_idx on usage_events (occurred_at);

-- What rollup_usage last counted for each (user, day): a re-run adds only the difference
-- to monthly_usage, so running a day twice never double-counts.
create table if not exists daily_usage (
  user_id     uuid          not null,
  day         date          not null,
  event_count bigint        not null,
  quantity    numeric(20, 4) not null,
  rolled_up_at timestamptz  not null default now(),
  primary key (day, user_id)
);

create table if not exists monthly_usage (
  user_id     uuid          not null,
  month       date          not null,  -- the first day of the month
  event_count bigint        not null default 0,
  quantity    numeric(20, 4) not null default 0,
  updated_at  timestamptz   not null default now(),
  primary key (user_id, month)
);

do $$
declare
  t text;
begin
  foreach t in array array['usage_events', 'daily_usage', 'monthly_usage'] loop
    execute format('alter table %I enable row level security', t);
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
  end loop;
end;
$$;
