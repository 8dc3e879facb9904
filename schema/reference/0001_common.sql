-- Reference tables of the bundled handlers (the "reference" migration set): applied only by
-- `python -m worker migrate --reference` and by the embedded demo, never forced on an app's
-- database. An app with its own tables needs only the columns README.md ("The business handlers") lists.
-- Written for PostgreSQL 14 through 18.
--
-- This file: users and in-app notifications, shared by several handlers.

create table if not exists profiles (
  id           uuid primary key,
  display_name text,
  -- IANA time zone name (Europe/Berlin); send_streak_reminders works in it
  timezone     text        not null default 'UTC',
  created_at   timestamptz not null default now()
);
create index if not exists profiles_timezone_idx on profiles (timezone);

create table if not exists notifications (
  id          bigint generated always as identity primary key,
  user_id     uuid        not null,
  kind        text        not null,
  title       text        not null,
  body        text,
  data        jsonb       not null default '{}'::jsonb,
  -- what makes a notification "the same one": a re-run inserts nothing (ON CONFLICT)
  dedupe_key  text,
  created_at  timestamptz not null default now(),
  read_at     timestamptz
);
create unique index if not exists notifications_dedupe_idx on notifications (user_id, dedupe_key);
create index if not exists notifications_created_idx on notifications (created_at);

-- Row level security on, as Supabase expects; the worker connects as the owner (or as a
-- role with BYPASSRLS such as service_role). Apps add their own policies for end users.
do $$
declare
  t text;
begin
  foreach t in array array['profiles', 'notifications'] loop
    execute format('alter table %I enable row level security', t);
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
  end loop;
end;
$$;
