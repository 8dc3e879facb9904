-- Flow control in the claim, and a claim whose cost never grows with rows it cannot take.
-- Written for PostgreSQL 14 through 18.
--
-- The claim index leads with queue and task type: the claim walks only the (queue, task
-- type) pairs it may take from, and within each only the due rows of each priority present
-- (worker/queries.sql, finish_and_claim), so rows of a paused queue, another queue, a task
-- type this worker does not serve, a task type held back by its limits, or due later cost
-- it nothing. It replaces job_queue_claim_idx (priority, run_at, id), which a claim had to
-- walk past every such row.
create index if not exists job_queue_ready_idx
  on job_queue (queue, task_type, priority, run_at, id) where status = 'pending';
drop index if exists job_queue_claim_idx;

-- A job's own concurrency key (set at enqueue; else a handler may name a payload field),
-- and, while it runs, the key its task type's limits counted it under ('' for a limit on
-- the task type alone; null when its task type has no concurrency limit).
alter table job_queue add column if not exists concurrency_key text;
alter table job_queue add column if not exists limit_key text;
alter table job_queue drop constraint if exists job_queue_concurrency_key_check;
alter table job_queue add constraint job_queue_concurrency_key_check
  check (concurrency_key is null or length(concurrency_key) <= 200);
-- Running jobs of limited task types only, by key: how many run now, counted in the claim.
-- Unlimited jobs never get an entry.
create index if not exists job_queue_limited_idx
  on job_queue (task_type, limit_key) where status = 'running' and limit_key is not null;

-- One row per task type with a limit or a hold. A claim that takes jobs of a limited type
-- locks its row (SKIP LOCKED: a claim never waits for another) and bumps `version`; a claim
-- whose snapshot saw an older version than the one it locked takes none of that type this
-- time. So the jobs each claim counts as running include every job an earlier claim of
-- that type took: fleet-wide limits hold under any number of workers. `held_until`: a
-- handler told by its provider to wait (a 429 with Retry-After) holds the whole type.
create table if not exists job_limits (
  task_type   text        primary key,
  version     bigint      not null default 0,
  held_until  timestamptz,
  held_reason text,
  updated_at  timestamptz not null default now(),
  constraint job_limits_task_type_check check (task_type ~ '^[A-Za-z0-9_.:-]{1,128}$')
);
alter table job_limits enable row level security;

-- When jobs of rate-limited task types started (one row per start), for the sliding window;
-- pruned by every worker's pruner once older than any window.
create table if not exists job_rate_starts (
  task_type  text        not null,
  started_at timestamptz not null
);
create index if not exists job_rate_starts_idx on job_rate_starts (task_type, started_at);
alter table job_rate_starts enable row level security;

-- The worker's role also keeps these (schema/0004_access.sql explains the rest).
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
  execute format('grant select, insert, update on public.job_limits to %I', worker_role);
  execute format('grant select, insert, delete on public.job_rate_starts to %I', worker_role);

  execute format('drop policy if exists %I on public.job_queue', policy);
  execute format('create policy %I on public.job_queue for all to %I using (true) with check (true)',
                 policy, worker_role);
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
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on job_limits, job_rate_starts from %I', api_role);
      execute format('revoke all on function job_queue_grant_worker(name) from %I', api_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on job_limits, job_rate_starts to service_role;
  end if;
  if exists (select 1 from pg_roles where rolname = 'job_worker') then
    perform job_queue_grant_worker('job_worker');
  end if;
end;
$$;
