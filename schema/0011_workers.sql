-- Worker presence: one row per running worker process, so the dashboard can show who is
-- running, what each one serves and runs now, and which ones went silent. Written by
-- worker/presence.py: an upsert at start, one UPDATE per heartbeat (every few seconds,
-- never per job), a DELETE at a clean shutdown. A process killed without one leaves its row
-- behind; it reads as stale once `last_seen_at` is older than a few of its own heartbeats,
-- and is deleted by the next worker that starts after a day of silence.
-- Written for PostgreSQL 14 through 18.

create table if not exists job_workers (
  -- The worker's WORKER_ID (default host:pid): what job_queue.locked_by and
  -- job_runs.worker_id say of the jobs it ran.
  id            text        primary key,
  host          text        not null,
  pid           integer     not null,
  version       text        not null,
  started_at    timestamptz not null default now(),
  last_seen_at  timestamptz not null default now(),
  -- How often this worker beats: stale after a few missed beats of its own interval.
  heartbeat_s   real        not null,
  queues        text[]      not null,
  concurrency   integer     not null,
  in_flight     integer     not null default 0,
  -- What it runs now, as of its last beat: [{"task_type": ..., "jobs": n, "job_ids": [...]}]
  -- (a few ids per task type), from its own running rows of job_queue.
  running       jsonb       not null default '[]'::jsonb,
  constraint job_workers_id_check check (length(id) between 1 and 200),
  constraint job_workers_heartbeat_check check (heartbeat_s > 0)
);
alter table job_workers enable row level security;

-- The dashboard at a million jobs: failed and cancelled jobs by queue and task type (the
-- overview's breakdown, bulk counts by queue) read from these indexes alone, instead of
-- one heap page per job, scattered over the whole table (measured: 300 ms for 19,400
-- failed jobs among 1,000,000). Like 0005's, they hold entries only for those rare
-- states: an enqueue, a claim or a success never adds one.
create index if not exists job_queue_failed_by_idx
  on job_queue (queue, task_type) where status = 'failed';
create index if not exists job_queue_cancelled_by_idx
  on job_queue (queue, task_type) where status = 'cancelled';

-- The worker's least-privilege role gets its own row's writes: the grant function of
-- 0004_access.sql (and 0010's), re-stated with job_workers added (select, insert, update, delete: a
-- worker announces itself, beats, leaves, and removes rows silent for a day).
create or replace function job_queue_grant_worker(worker_role name) returns void
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  policy text := 'worker ' || worker_role;
begin
  if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = worker_role) then
    raise exception using errcode = 'undefined_object',
      message = format('role %s does not exist: create it first (see README.md, "Access control")',
                       quote_ident(worker_role));
  end if;
  execute format('grant select, insert, update, delete on public.job_queue to %I', worker_role);
  execute format('grant select, insert, delete on public.job_runs to %I', worker_role);
  execute format('grant select, insert, update, delete on public.job_schedules to %I', worker_role);
  execute format('grant select on public.job_queue_pauses to %I', worker_role);
  execute format('grant select on public.worker_migrations to %I', worker_role);
  execute format('grant select, insert, update, delete on public.job_workers to %I', worker_role);
  execute format('grant select, insert, update on public.job_limits to %I', worker_role);
  execute format('grant select, insert, delete on public.job_rate_starts to %I', worker_role);

  execute format('drop policy if exists %I on public.job_queue', policy);
  execute format('create policy %I on public.job_queue for all to %I using (true) with check (true)',
                 policy, worker_role);
  -- One policy for every command; the grants above leave UPDATE out.
  execute format('drop policy if exists %I on public.job_runs', policy);
  execute format('create policy %I on public.job_runs for all to %I using (true) with check (true)',
                 policy, worker_role);
  execute format('drop policy if exists %I on public.job_queue_pauses', policy);
  execute format('create policy %I on public.job_queue_pauses for select to %I using (true)',
                 policy, worker_role);
  execute format('drop policy if exists %I on public.worker_migrations', policy);
  execute format('create policy %I on public.worker_migrations for select to %I using (true)',
                 policy, worker_role);
  execute format('drop policy if exists %I on public.job_limits', policy);
  execute format('create policy %I on public.job_limits for all to %I using (true) with check (true)',
                 policy, worker_role);
  execute format('drop policy if exists %I on public.job_rate_starts', policy);
  execute format('create policy %I on public.job_rate_starts for all to %I using (true) with check (true)',
                 policy, worker_role);
  execute format('drop policy if exists %I on public.job_workers', policy);
  execute format('create policy %I on public.job_workers for all to %I using (true) with check (true)',
                 policy, worker_role);

  execute format('drop policy if exists %I on public.job_schedules', policy || ' read');
  execute format('create policy %I on public.job_schedules for select to %I using (true)',
                 policy || ' read', worker_role);
  execute format('drop policy if exists %I on public.job_schedules', policy || ' tick');
  execute format('create policy %I on public.job_schedules for update to %I using (true) with check (true)',
                 policy || ' tick', worker_role);
  execute format('drop policy if exists %I on public.job_schedules', policy || ' file insert');
  execute format('create policy %I on public.job_schedules for insert to %I with check (source = ''file'')',
                 policy || ' file insert', worker_role);
  execute format('drop policy if exists %I on public.job_schedules', policy || ' file delete');
  execute format('create policy %I on public.job_schedules for delete to %I using (source = ''file'')',
                 policy || ' file delete', worker_role);
end;
$$;

revoke all on function job_queue_grant_worker(name) from public;

do $$
declare
  api_role text;
begin
  -- The API roles: service_role reads and manages the table (the dashboard and admins);
  -- anon and authenticated get nothing, whatever Supabase's default privileges granted.
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on table public.job_workers from %I', api_role);
      execute format('revoke all on function public.job_queue_grant_worker(name) from %I',
                     api_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.job_workers to service_role;
  end if;
  if exists (select 1 from pg_roles where rolname = 'job_worker') then
    perform job_queue_grant_worker('job_worker');
  end if;
end;
$$;
