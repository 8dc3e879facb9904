-- The API roles' rights on every core object, stated in one place and independent of
-- default privileges. Written for PostgreSQL 14 through 18.
--
-- On Supabase, every table, sequence and function the `postgres` role creates in public is
-- granted to anon, authenticated and service_role by default privileges. The earlier
-- migrations revoked most of that, object by object, so what each role ended up with
-- depended on whether the database had those defaults: on Supabase service_role held UPDATE
-- on the identity sequences, and anon, authenticated and service_role held direct EXECUTE
-- grants on the validators, neither of which a plain PostgreSQL gives them. Here each of
-- the three loses every right on every core object, then gets exactly what README.md's
-- "Access control" table says. The result is the same with or without default privileges
-- (tests/integration/test_supabase_access.py compares the two).
--
-- Objects are named one by one, never `... on all tables in schema public`: public also
-- holds the app's own tables. A new core object belongs in these lists (and in the test's
-- matrix, which fails until it is there).
do $$
declare
  tables constant text :=
    'public.job_queue, public.job_runs, public.job_schedules, public.job_queue_pauses, '
    'public.job_admin_audit, public.worker_migrations';
  sequences constant text :=
    'public.job_queue_id_seq, public.job_runs_id_seq, public.job_admin_audit_id_seq';
  -- SECURITY DEFINER admin functions (Supabase RPCs): service_role only.
  admin_functions constant text :=
    'public.job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text), '
    'public.job_schedule_create(text, text, text, jsonb, text, text, integer, integer, text, boolean), '
    'public.job_schedule_update(text, text, text, text, jsonb, text, integer, integer, text), '
    'public.job_schedule_retime(text, text, text), '
    'public.job_schedule_toggle(text, boolean), '
    'public.job_schedule_delete(text), '
    'public.job_schedules_list(), '
    'public.job_schedule_history(text, integer), '
    'public.job_queue_pause(text, text), '
    'public.job_queue_resume(text)';
  -- Trigger functions and the grant helper: the tables' owner only.
  owner_functions constant text :=
    'public.job_queue_notify(), public.job_schedules_guard(), public.job_queue_grant_worker(name)';
  -- The validators the schedules trigger runs as whoever writes: executable by everyone
  -- through PUBLIC, with no grant of their own to any role.
  validators constant text :=
    'public.job_schedule_cron_value(text, integer), public.job_schedule_cron_error(text), '
    'public.job_schedule_timezone_error(text), '
    'public.job_schedule_problem(text, text, text, text, jsonb, text, integer, integer, text)';
  api_role text;
begin
  execute format('revoke all on function %s, %s from public', admin_functions, owner_functions);
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on table %s from %I', tables, api_role);
      execute format('revoke all on sequence %s from %I', sequences, api_role);
      execute format('revoke all on function %s, %s, %s from %I',
                     admin_functions, owner_functions, validators, api_role);
    end if;
  end loop;

  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    -- The audit trail, every row (the policy is 0001's, re-stated for a role created since).
    grant select on table public.job_runs to authenticated;
    drop policy if exists job_runs_authenticated_read on public.job_runs;
    create policy job_runs_authenticated_read on public.job_runs
      for select to authenticated using (true);
  end if;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.job_queue, public.job_runs, public.job_schedules,
      public.job_queue_pauses, public.job_admin_audit to service_role;
    grant select on table public.worker_migrations to service_role;
    execute format('grant usage, select on sequence %s to service_role', sequences);
    execute format('grant execute on function %s to service_role', admin_functions);
  end if;
end;
$$;
