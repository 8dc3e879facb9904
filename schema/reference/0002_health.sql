-- The health app: wearable connections and their samples (sync_wearables), and the
-- activity log that send_streak_reminders reads.

create table if not exists wearable_connections (
  id               bigint generated always as identity primary key,
  user_id          uuid        not null,
  provider         text        not null default 'default',
  external_user_id text        not null,
  -- the provider's opaque resume point; null: sync from the beginning
  sync_cursor      text,
  active           boolean     not null default true,
  last_synced_at   timestamptz,
  created_at       timestamptz not null default now(),
  constraint wearable_connections_external_key unique (provider, external_user_id)
);

create table if not exists wearable_samples (
  connection_id bigint      not null references wearable_connections (id) on delete cascade,
  external_id   text        not null,
  user_id       uuid        not null,
  kind          text        not null,
  started_at    timestamptz not null,
  ended_at      timestamptz,
  value         double precision not null,
  unit          text,
  synced_at     timestamptz not null default now(),
  primary key (connection_id, external_id)
);
create index if not exists wearable_samples_user_idx on wearable_samples (user_id, started_at);

create table if not exists activity_logs (
  id        bigint generated always as identity primary key,
  user_id   uuid        not null,
  kind      text        not null default 'log',
  logged_at timestamptz not null default now()
);
create index if not exists activity_logs_user_idx on activity_logs (user_id, logged_at);

do $$
declare
  t text;
begin
  foreach t in array array['wearable_connections', 'wearable_samples', 'activity_logs'] loop
    execute format('alter table %I enable row level security', t);
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
  end loop;
end;
$$;
