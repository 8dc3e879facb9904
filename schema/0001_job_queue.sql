-- The job queue, its audit trail and the schedules table.
-- Applied by `python -m worker migrate` inside one transaction with search_path = public.
-- Written for PostgreSQL 14 through 18: no MERGE, no NULLS NOT DISTINCT.

create table if not exists job_queue (
  id               bigint generated always as identity primary key,
  queue            text        not null default 'default',
  task_type        text        not null,
  payload          jsonb       not null default '{}'::jsonb,
  status           text        not null default 'pending',
  priority         smallint    not null default 0,
  run_at           timestamptz not null default now(),
  attempts         integer     not null default 0,
  -- null: the handler's own max_attempts, filled in when the job is first claimed
  max_attempts     integer,
  last_error       text,
  dedupe_key       text,
  locked_by        text,
  lease_expires_at timestamptz,
  run_type         text        not null default 'queue',
  schedule_name    text,
  requested_by     uuid,
  result           jsonb,
  created_at       timestamptz not null default now(),
  started_at       timestamptz,
  finished_at      timestamptz,
  updated_at       timestamptz not null default now(),
  constraint job_queue_status_check
    check (status in ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  constraint job_queue_run_type_check check (run_type in ('queue', 'cron', 'manual')),
  constraint job_queue_queue_check check (queue ~ '^[A-Za-z0-9_.:-]{1,64}$'),
  constraint job_queue_task_type_check check (task_type ~ '^[A-Za-z0-9_.:-]{1,128}$'),
  constraint job_queue_priority_check check (priority between -1000 and 1000),
  constraint job_queue_attempts_check check (attempts >= 0),
  constraint job_queue_max_attempts_check check (max_attempts is null or max_attempts between 1 and 1000),
  constraint job_queue_dedupe_key_check check (dedupe_key is null or length(dedupe_key) <= 512)
);

-- A queue table is updated twice per job: vacuum it early and often so the claim index
-- does not fill with dead entries.
-- fillfactor 70: a job's claim and finish write new row versions, which then fit on the
-- same page more often (with the BRIN index above: +15-20 % drain throughput, measured).
alter table job_queue set (
  fillfactor = 70,
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_analyze_scale_factor = 0.02
);

-- The claim: pending jobs in priority, run_at, id order. Queue and task type are filters,
-- not leading columns: with `queue = ANY(...)` a leading queue column cannot return rows
-- in claim order, and the planner then sorts every pending row (measured: 9 ms instead of
-- 2 ms to claim 100 of 20,000).
create index if not exists job_queue_claim_idx
  on job_queue (priority, run_at, id) where status = 'pending';
-- The rescuer: running jobs (few at any time; it filters on lease_expires_at). Keyed on id,
-- not lease_expires_at: a claimed batch shares one lease expiry, and inserting 100 equal
-- keys per claim sent the btree through deduplication passes that capped the engine at
-- ~12k jobs/s on the 2-core reference machine; keyed on id it reached ~20k+.
create index if not exists job_queue_running_idx
  on job_queue (id) where status = 'running';
-- At most one live (pending or running) job per dedupe key.
create unique index if not exists job_queue_dedupe_idx
  on job_queue (dedupe_key) where dedupe_key is not null and status in ('pending', 'running');

-- One row per attempt: the audit trail.
create table if not exists job_runs (
  id            bigint generated always as identity primary key,
  job_id        bigint      not null,
  job_key       text        not null,
  queue         text        not null,
  run_type      text        not null,
  status        text        not null,
  reason        text,
  attempt       integer     not null,
  rows_affected bigint,
  notes         text,
  error         text,
  user_id       uuid,
  worker_id     text,
  schedule_name text,
  started_at    timestamptz not null,
  finished_at   timestamptz not null,
  duration_ms   integer     not null,
  constraint job_runs_status_check
    check (status in ('succeeded', 'retry', 'failed', 'cancelled', 'rescued'))
);
create index if not exists job_runs_job_idx on job_runs (job_id);
-- BRIN, not btree: rows arrive in started_at order, so a few pages cover the table for
-- retention's range scans, and the hot path pays almost nothing (a btree here cost ~15 %
-- of drain throughput). "Latest runs" is `order by id desc`, served by the primary key.
create index if not exists job_runs_started_brin on job_runs using brin (started_at);

-- Recurring tasks (the scheduler that reads them lands separately).
create table if not exists job_schedules (
  name          text primary key,
  cron          text        not null,
  timezone      text        not null default 'UTC',
  task_type     text        not null,
  payload       jsonb       not null default '{}'::jsonb,
  queue         text        not null default 'default',
  priority      smallint    not null default 0,
  max_attempts  integer,
  active        boolean     not null default true,
  missed        text        not null default 'latest',
  last_tick_at  timestamptz,
  next_tick_at  timestamptz,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  constraint job_schedules_missed_check check (missed in ('latest', 'skip', 'all'))
);

-- Wake idle workers: one NOTIFY per INSERT statement, never per row and never on UPDATE
-- (a NOTIFY takes a global lock at commit, so notifying on every update would serialise
-- the workers' own writes).
create or replace function job_queue_notify() returns trigger
  language plpgsql
  set search_path = pg_catalog, public
as $$
begin
  perform pg_notify('job_queue', '');
  return null;
end;
$$;

drop trigger if exists job_queue_notify on job_queue;
create trigger job_queue_notify
  after insert on job_queue
  for each statement execute function job_queue_notify();

-- Enqueue from SQL, pg_cron or a Supabase RPC. Returns the job id; with a dedupe_key that
-- already has a live job, returns that job's id and inserts nothing.
create or replace function job_queue_enqueue(
  task_type    text,
  payload      jsonb       default '{}'::jsonb,
  run_at       timestamptz default null,
  queue        text        default 'default',
  priority     integer     default 0,
  max_attempts integer     default null,
  dedupe_key   text        default null
) returns bigint
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
declare
  new_id bigint;
begin
  insert into public.job_queue as j (task_type, payload, run_at, queue, priority, max_attempts, dedupe_key)
  values (job_queue_enqueue.task_type, coalesce(job_queue_enqueue.payload, '{}'::jsonb),
          coalesce(job_queue_enqueue.run_at, now()), coalesce(job_queue_enqueue.queue, 'default'),
          coalesce(job_queue_enqueue.priority, 0), job_queue_enqueue.max_attempts,
          job_queue_enqueue.dedupe_key)
  on conflict (dedupe_key) where dedupe_key is not null and status in ('pending', 'running')
  do nothing
  returning j.id into new_id;
  if new_id is null then
    select j.id into new_id from public.job_queue j
     where j.dedupe_key = job_queue_enqueue.dedupe_key and j.status in ('pending', 'running');
  end if;
  return new_id;
end;
$$;

-- Row level security: nothing is visible through PostgREST unless a policy says so.
-- The worker connects as the owner (or a role with BYPASSRLS, such as service_role).
alter table job_queue enable row level security;
alter table job_runs enable row level security;
alter table job_schedules enable row level security;

revoke all on function job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text) from public;
revoke all on function job_queue_notify() from public;

-- Supabase roles, where they exist: service_role does everything; authenticated reads the
-- audit trail; anon gets nothing (Supabase's default privileges would grant it all).
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on job_queue, job_runs, job_schedules from anon;
    revoke all on function job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text) from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on job_queue, job_runs, job_schedules from authenticated;
    revoke all on function job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text) from authenticated;
    grant select on job_runs to authenticated;
    drop policy if exists job_runs_authenticated_read on job_runs;
    create policy job_runs_authenticated_read on job_runs for select to authenticated using (true);
  end if;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on job_queue, job_runs, job_schedules to service_role;
    grant usage, select on all sequences in schema public to service_role;
    grant execute on function job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text) to service_role;
  end if;
end;
$$;
