-- The coaching app: competitors on the game platform, their games (game_platform_sync) and
-- their totals (game_platform_totals_sweep).

create table if not exists competitors (
  id                   bigint generated always as identity primary key,
  coach_id             uuid,
  player_id            text        not null unique,
  display_name         text,
  -- incremental sync cursor: unix time of the newest game already stored
  after_time_unix      bigint      not null default 0,
  needs_totals_refresh boolean     not null default false,
  -- set with the flag; the sweep clears the flag only if no newer activity arrived meanwhile
  last_activity_at     timestamptz,
  last_synced_at       timestamptz,
  total_games          integer,
  total_wins           integer,
  total_losses         integer,
  total_draws          integer,
  rating               integer,
  totals_refreshed_at  timestamptz,
  created_at           timestamptz not null default now()
);
create index if not exists competitors_coach_idx on competitors (coach_id);
create index if not exists competitors_refresh_idx on competitors (id) where needs_totals_refresh;

create table if not exists competitor_game_stats (
  competitor_id bigint      not null references competitors (id) on delete cascade,
  game_id       text        not null,
  played_at     timestamptz not null,
  result        text,
  score         double precision,
  stats         jsonb       not null default '{}'::jsonb,
  synced_at     timestamptz not null default now(),
  primary key (competitor_id, game_id)
);

do $$
declare
  t text;
begin
  foreach t in array array['competitors', 'competitor_game_stats'] loop
    execute format('alter table %I enable row level security', t);
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on %I to service_role', t);
    end if;
  end loop;
end;
$$;
