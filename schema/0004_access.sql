-- Access control: the worker's own least-privilege role, SECURITY DEFINER functions that
-- trust nothing from the caller's schemas, and the migration bookkeeping kept away from
-- API roles. The matrix and how to create the worker role: README.md, "Access control".
-- Written for PostgreSQL 14 through 18.

-- SECURITY DEFINER functions run as their owner (usually the `postgres` role). Pinned to
-- `pg_catalog, public`, they would still resolve functions and operators in public, and a
-- role that may create objects there (everyone before PostgreSQL 15, and on projects that
-- grant it) could define `public.format(text, text)` or `public.|| (text, bigint)`: a
-- better match for the argument types than pg_catalog's, so the owner would run it. Every
-- relation and function in these bodies is schema-qualified: they need nothing from
-- public. pg_temp is named last on purpose: left out, it would be searched *first* for
-- tables. The two trigger functions run as whoever writes, which includes the definers'
-- owner when a definer writes: pinned the same way.
alter function job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text)
  set search_path = pg_catalog, pg_temp;
alter function job_schedule_create(text, text, text, jsonb, text, text, integer, integer, text, boolean)
  set search_path = pg_catalog, pg_temp;
alter function job_schedule_update(text, text, text, text, jsonb, text, integer, integer, text)
  set search_path = pg_catalog, pg_temp;
alter function job_schedule_retime(text, text, text) set search_path = pg_catalog, pg_temp;
alter function job_schedule_toggle(text, boolean) set search_path = pg_catalog, pg_temp;
alter function job_schedule_delete(text) set search_path = pg_catalog, pg_temp;
alter function job_schedules_list() set search_path = pg_catalog, pg_temp;
alter function job_schedule_history(text, integer) set search_path = pg_catalog, pg_temp;
alter function job_queue_pause(text, text) set search_path = pg_catalog, pg_temp;
alter function job_queue_resume(text) set search_path = pg_catalog, pg_temp;
alter function job_queue_notify() set search_path = pg_catalog, pg_temp;
alter function job_schedules_guard() set search_path = pg_catalog, pg_temp;

-- The migration bookkeeping (created by the worker before the first migration). Supabase's
-- default privileges grant every new table in public to anon and authenticated, and
-- PostgREST would serve it: without RLS, anyone with the anon key could read or delete the
-- migration history. Admins read it through service_role; nobody but the owner writes it.
alter table worker_migrations enable row level security;

-- The worker's role: exactly what `python -m worker` (daemon, --once, status) needs.
--   job_queue         read, claim/finish (update), enqueue schedule ticks (insert), prune
--   job_runs          read, insert one row per attempt, prune; never update: the worker
--                     cannot rewrite the audit trail
--   job_schedules     read, tick (update), sync the schedule file: insert and delete only
--                     rows with source = 'file' (RLS), so it never removes an admin's schedule
--   job_queue_pauses  read (the claim skips paused queues); pausing is for admins
--   worker_migrations read (the start-up check that the schema is up to date)
-- No function: the admin functions (pause, schedules, enqueue) are not the worker's job, and
-- the validators the schedule trigger calls are executable by everyone. Migrating needs the
-- owner. RLS applies to this role (it is neither the owner nor BYPASSRLS): each table gets
-- policies naming it.
-- Not SECURITY DEFINER: only the tables' owner (or a superuser) can grant on them, and only
-- they may call this.
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
  -- anon and authenticated: nothing here. Supabase's default privileges grant them (and
  -- service_role) every new table, sequence and function in public, trigger functions
  -- included; the earlier migrations revoked the tables and the admin functions.
  foreach api_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on worker_migrations from %I', api_role);
      execute format('revoke all on sequence %s, %s from %I',
                     pg_get_serial_sequence('public.job_queue', 'id'),
                     pg_get_serial_sequence('public.job_runs', 'id'), api_role);
      execute format('revoke all on function job_queue_notify(), job_schedules_guard(), '
                     'job_queue_grant_worker(name) from %I', api_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    revoke all on worker_migrations from service_role;
    grant select on worker_migrations to service_role;
    revoke all on function job_queue_notify(), job_schedules_guard(), job_queue_grant_worker(name)
      from service_role;
  end if;
  -- The worker's role, when it exists already. Created later: an admin (the tables' owner)
  -- runs `select job_queue_grant_worker('job_worker');` once.
  if exists (select 1 from pg_roles where rolname = 'job_worker') then
    perform job_queue_grant_worker('job_worker');
  end if;
end;
$$;
