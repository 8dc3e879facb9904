-- The challenges app: challenges and their members (auto_complete_challenges), and a
-- statistics view with its refresh function (refresh_metrics).

create table if not exists challenges (
  id                     bigint generated always as identity primary key,
  title                  text        not null,
  status                 text        not null default 'active',
  starts_at              timestamptz not null default now(),
  ends_at                timestamptz not null,
  average_completion_pct numeric(5, 2),
  closed_at              timestamptz,
  created_at             timestamptz not null default now(),
  constraint challenges_status_check check (status in ('active', 'completed', 'failed'))
);
create index if not exists challenges_active_idx on challenges (ends_at, id) where status = 'active';

create table if not exists challenge_members (
  challenge_id   bigint       not null references challenges (id) on delete cascade,
  user_id        uuid         not null,
  completion_pct numeric(5, 2) not null default 0,
  joined_at      timestamptz  not null default now(),
  primary key (challenge_id, user_id),
  constraint challenge_members_completion_check check (completion_pct between 0 and 100)
);
create index if not exists challenge_members_user_idx on challenge_members (user_id);

-- Per-status statistics; the unique index lets refresh_metrics refresh it CONCURRENTLY.
create materialized view if not exists challenge_stats as
  select c.status,
         count(*)::bigint                                        as challenges,
         coalesce(round(avg(c.average_completion_pct), 2), 0)    as average_completion_pct
    from challenges c
   group by c.status
  with no data;
create unique index if not exists challenge_stats_status_idx on challenge_stats (status);

create or replace function refresh_challenge_stats() returns bigint
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
begin
  refresh materialized view public.challenge_stats;
  return (select count(*) from public.challenge_stats);
end;
$$;
revoke all on function refresh_challenge_stats() from public;

do $$
declare
  t text;
begin
  foreach t in array array['challenges', 'challenge_members'] loop
    execute format('alter table %I enable row level security', t);
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant select on challenge_stats to service_role;
  end if;
  -- Supabase exposes materialized views through PostgREST; they cannot have RLS.
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on challenge_stats from anon;
  end if;
end;
$$;
