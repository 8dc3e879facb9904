-- Admin RPCs for an app's own admins: signed-in users (Supabase's `authenticated`) for whom
-- the app's admin check (such as `is_admin_user()`) returns true may call the admin
-- functions and read job_queue; everyone else signed in gets a one-line 42501 and sees no
-- job. See README.md, "Supabase RPCs for app admins". Written for PostgreSQL 14 through 18,
-- with or without Supabase's roles and auth schema.
--
-- Who calls: inside a SECURITY DEFINER function current_user is the owner, so the caller is
-- the role the session switched to (PostgREST's `set local role`, the `role` setting), or
-- else the login (session_user). Callers fall in three kinds:
--   anon           anon, or a role that holds only anon's rights: never an admin
--   authenticated  authenticated, or a role that holds its rights (and neither the owner's
--                  nor service_role's): an admin only when the app's check says so
--   privileged     anyone else (the owner, service_role, a superuser, on plain PostgreSQL
--                  every role that was granted a function): always an admin
-- An app's own SECURITY DEFINER function that calls one of these for a signed-in user gets
-- that user's answer: the request's role decides, not the function's owner.
--
-- The signed-in user is the JWT's `sub`, read from `request.jwt.claims` (or the older
-- per-claim `request.jwt.claim.sub`, which wins, as in Supabase's auth.uid()) without
-- depending on the auth schema.
--
-- Every admin change writes one job_admin_audit row in its own transaction. The actor is
-- `rpc:<sub>` for a signed-in user, else the calling role; a privileged caller that knows
-- better (the worker's control plane: `cli:alice`, a dashboard user) names it with
-- set_config('job_queue.actor', ..., true) and, optionally, 'job_queue.remote_addr'; one
-- that writes its own row for the change (the pg_cron importer) sets
-- 'job_queue.audited_by_caller' to 'on'. End users cannot name an actor or skip the row.
--
-- All functions pin search_path = pg_catalog, pg_temp and qualify every name in public
-- (see 0004_access.sql).

-- The app's admin check: one row, or none (no signed-in user is an admin). The function is
-- stored by schema and name, not as regprocedure: pg_upgrade refuses tables with reg* OID
-- columns, and function OIDs do not survive a dump and restore. Its owner is stored too, so
-- a function of the same name created later by someone else is never called.
create table if not exists job_admin_check (
  only_row      boolean     primary key default true,
  schema_name   name        not null,
  function_name name        not null,
  owner_name    name        not null,
  set_at        timestamptz not null default now(),
  set_by        text        not null,
  constraint job_admin_check_one_row check (only_row)
);
alter table job_admin_check enable row level security;

-- == who is calling ==

-- A value as a message may show it: quoted, one line, at most 40 characters.
create or replace function job_queue_shown(value text)
  returns text
  language sql
  immutable
  set search_path = pg_catalog, pg_temp
as $$
  select case when value is null then 'NULL'
              else '''' || regexp_replace(left(value, 40), '[[:cntrl:]]', '?', 'g')
                   || case when length(value) > 40 then '...' else '' end || '''' end;
$$;

-- The JWT subject of the request (a signed-in user's id), or null.
create or replace function job_queue_caller_sub()
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select nullif(coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                         nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'),
                '');
$$;

-- The role the request runs as: the one the session switched to, else the login.
create or replace function job_queue_caller_role()
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(current_setting('role'), 'none'), session_user::text);
$$;

-- 'anon', 'authenticated' or 'privileged' (see the top of this file).
create or replace function job_queue_caller_kind()
  returns text
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  who   name := public.job_queue_caller_role();
  owner oid;
begin
  if who in ('anon', 'authenticated') then
    return who;
  end if;
  -- A login made a member of anon or authenticated holds their grants (so it may call the
  -- admin functions): it counts as them unless it also holds the owner's or service_role's.
  select c.relowner into owner from pg_class c where c.oid = 'public.job_queue'::regclass;
  if exists (select 1 from pg_roles r where r.rolname = who and r.rolsuper)
     or pg_has_role(who, owner, 'USAGE')
     or (exists (select 1 from pg_roles r where r.rolname = 'service_role')
         and pg_has_role(who, 'service_role', 'USAGE')) then
    return 'privileged';
  end if;
  if exists (select 1 from pg_roles r where r.rolname = 'authenticated')
     and pg_has_role(who, 'authenticated', 'USAGE') then
    return 'authenticated';
  end if;
  if exists (select 1 from pg_roles r where r.rolname = 'anon')
     and pg_has_role(who, 'anon', 'USAGE') then
    return 'anon';
  end if;
  return 'privileged';
end;
$$;

-- Who the audit row names: the actor a privileged caller set, `rpc:<sub>` for a signed-in
-- user, else the calling role.
create or replace function job_queue_actor()
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    case when public.job_queue_caller_kind() = 'privileged'
         then left(nullif(current_setting('job_queue.actor', true), ''), 200) end,
    'rpc:' || left(public.job_queue_caller_sub(), 200),
    public.job_queue_caller_role());
$$;

-- One audit row for an admin change, unless a privileged caller writes its own.
create or replace function job_queue_audit(action text, target text, detail jsonb)
  returns void
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  privileged boolean := public.job_queue_caller_kind() = 'privileged';
begin
  if privileged and current_setting('job_queue.audited_by_caller', true) = 'on' then
    return;
  end if;
  insert into public.job_admin_audit (actor, action, target, detail, remote_addr)
  values (public.job_queue_actor(), job_queue_audit.action, job_queue_audit.target,
          job_queue_audit.detail,
          case when privileged
               then left(nullif(current_setting('job_queue.remote_addr', true), ''), 100) end);
end;
$$;

-- == the app's admin check ==

-- Why function `fn` cannot be the admin check (null: it can). It is called as the owner of
-- these tables, with this file's search_path: so it must fix its own search_path, and it
-- must not be a SECURITY INVOKER function of another role (that role's code would run with
-- the owner's rights).
create or replace function job_queue_admin_check_problem(fn oid)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select case
    when p.oid is null then 'it does not exist'
    when p.proname = 'job_queue_is_admin' and p.pronamespace = 'public'::regnamespace
      then 'it would call itself'
    when p.prokind <> 'f' or p.proretset or p.prorettype <> 'pg_catalog.bool'::regtype
      then 'it must be a function returning boolean'
    when p.pronargs <> 0 then 'it must take no arguments'
    when not exists (select 1 from unnest(p.proconfig) c where c like 'search\_path=%')
      then 'it must fix its search_path (alter function ... set search_path = ...)'
    when not p.prosecdef and p.proowner <> o.relowner
      then format('it must be SECURITY DEFINER or belong to %s, the owner of job_queue',
                  pg_get_userbyid(o.relowner))
    when not has_function_privilege(p.oid, 'EXECUTE')
      then format('%s may not execute it', pg_get_userbyid(o.relowner))
  end
    from (select fn) f
    left join pg_proc p on p.oid = f.fn
    cross join (select c.relowner from pg_class c where c.oid = 'public.job_queue'::regclass) o;
$$;

-- The configured check, if it still exists under the same owner.
create or replace function job_queue_admin_check_function()
  returns regprocedure
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select p.oid::regprocedure
    from public.job_admin_check c
    join pg_namespace n on n.nspname = c.schema_name
    join pg_proc p on p.pronamespace = n.oid and p.proname = c.function_name
                  and p.pronargs = 0 and pg_get_userbyid(p.proowner) = c.owner_name;
$$;

-- Why the caller is not an admin (null: it is).
create or replace function job_queue_admin_refusal()
  returns text
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  kind    text := public.job_queue_caller_kind();
  fn      regprocedure;
  problem text;
  yes     boolean;
begin
  if kind = 'privileged' then
    return null;
  elsif kind = 'anon' then
    return 'sign in as an admin of this app';
  end if;
  fn := public.job_queue_admin_check_function();
  if fn is null then
    if exists (select 1 from public.job_admin_check) then
      return 'the admin check this app named no longer exists (or changed owner): set it'
             ' again with job_queue_set_admin_check';
    end if;
    return 'this app names no admin check (job_queue_set_admin_check), so no signed-in user'
           ' is an admin';
  end if;
  problem := public.job_queue_admin_check_problem(fn);
  if problem is not null then
    return format('the admin check %s no longer qualifies: %s', fn, problem);
  end if;
  -- fn::text is the function as PostgreSQL names it: schema-qualified and quoted.
  execute 'select ' || fn::text into yes;
  if yes then
    return null;
  end if;
  return format('%s is not true for this user', fn);
end;
$$;

-- Whether the caller may use the admin functions (for RLS policies and an app's UI).
create or replace function job_queue_is_admin()
  returns boolean
  language sql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
  select public.job_queue_admin_refusal() is null;
$$;

-- Raise 42501 unless the caller is an admin; `fn` names the function refused.
create or replace function job_queue_require_admin(fn text)
  returns void
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  refusal text := public.job_queue_admin_refusal();
begin
  if refusal is not null then
    raise exception using errcode = 'insufficient_privilege',
      message = format('permission denied for function %s: %s', fn, refusal);
  end if;
end;
$$;

-- Name the app's admin check (null: none, so no signed-in user is an admin). The owner or
-- service_role only. Returns the check as PostgreSQL names it.
create or replace function job_queue_set_admin_check(check_function regprocedure)
  returns text
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  previous text := public.job_queue_admin_check_function()::text;
  problem  text;
begin
  if public.job_queue_caller_kind() <> 'privileged' then
    raise exception using errcode = 'insufficient_privilege',
      message = 'permission denied for function job_queue_set_admin_check: only the owner or'
                ' service_role may name the admin check';
  end if;
  if check_function is null then
    delete from public.job_admin_check;
    if found then
      perform public.job_queue_audit('admin_check_unset', 'admin_check',
                                     jsonb_build_object('previous', previous));
    end if;
    return null;
  end if;
  problem := public.job_queue_admin_check_problem(check_function);
  if problem is not null then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('cannot use %s as the admin check: %s', check_function, problem);
  end if;
  insert into public.job_admin_check as c (schema_name, function_name, owner_name, set_by)
  select n.nspname, p.proname, pg_get_userbyid(p.proowner), public.job_queue_actor()
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where p.oid = check_function
  on conflict (only_row) do update
    set schema_name = excluded.schema_name, function_name = excluded.function_name,
        owner_name = excluded.owner_name, set_at = now(), set_by = excluded.set_by;
  perform public.job_queue_audit('admin_check_set', 'admin_check',
    jsonb_build_object('function', check_function::text, 'previous', previous));
  return check_function::text;
end;
$$;

-- == schedules: the functions of 0002, now checked and audited ==
-- Same signatures, same answers; each checks the caller first and audits what it changed
-- (the actions and targets of the control plane: schedule_create, schedule:<name>, ...).

create or replace function job_schedule_create(
  name         text,
  cron         text,
  task_type    text,
  payload      jsonb   default '{}'::jsonb,
  timezone     text    default 'UTC',
  queue        text    default 'default',
  priority     integer default 0,
  max_attempts integer default null,
  missed       text    default 'latest',
  active       boolean default true
) returns job_schedules
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  created public.job_schedules;
begin
  perform public.job_queue_require_admin('job_schedule_create');
  insert into public.job_schedules as s
    (name, cron, timezone, task_type, payload, queue, priority, max_attempts, missed, active,
     source)
  values
    (job_schedule_create.name, btrim(job_schedule_create.cron), job_schedule_create.timezone,
     job_schedule_create.task_type, job_schedule_create.payload, job_schedule_create.queue,
     job_schedule_create.priority, job_schedule_create.max_attempts, job_schedule_create.missed,
     coalesce(job_schedule_create.active, true), 'admin')
  on conflict (name) do nothing
  returning s.* into created;
  if not found then
    raise exception using errcode = 'unique_violation',
      message = format('a schedule named ''%s'' already exists', job_schedule_create.name);
  end if;
  perform public.job_queue_audit('schedule_create', 'schedule:' || created.name,
                                 to_jsonb(created) - 'payload');
  return created;
end;
$$;

create or replace function job_schedule_update(
  name         text,
  cron         text    default null,
  timezone     text    default null,
  task_type    text    default null,
  payload      jsonb   default null,
  queue        text    default null,
  priority     integer default null,
  max_attempts integer default null,
  missed       text    default null
) returns job_schedules
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  changed public.job_schedules;
begin
  perform public.job_queue_require_admin('job_schedule_update');
  update public.job_schedules s
     set cron = coalesce(btrim(job_schedule_update.cron), s.cron),
         timezone = coalesce(job_schedule_update.timezone, s.timezone),
         task_type = coalesce(job_schedule_update.task_type, s.task_type),
         payload = coalesce(job_schedule_update.payload, s.payload),
         queue = coalesce(job_schedule_update.queue, s.queue),
         priority = coalesce(job_schedule_update.priority, s.priority),
         max_attempts = coalesce(job_schedule_update.max_attempts, s.max_attempts),
         missed = coalesce(job_schedule_update.missed, s.missed)
   where s.name = job_schedule_update.name
  returning s.* into changed;
  if not found then
    raise exception using errcode = 'no_data_found',
      message = format('no schedule named %s', public.job_queue_shown(job_schedule_update.name));
  end if;
  perform public.job_queue_audit('schedule_update', 'schedule:' || changed.name,
                                 to_jsonb(changed) - 'payload');
  return changed;
end;
$$;

-- Its own statement now, not a call of job_schedule_update: one audit row, schedule_retime.
create or replace function job_schedule_retime(name text, cron text, timezone text default null)
  returns job_schedules
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  changed public.job_schedules;
begin
  perform public.job_queue_require_admin('job_schedule_retime');
  update public.job_schedules s
     set cron = coalesce(btrim(job_schedule_retime.cron), s.cron),
         timezone = coalesce(job_schedule_retime.timezone, s.timezone)
   where s.name = job_schedule_retime.name
  returning s.* into changed;
  if not found then
    raise exception using errcode = 'no_data_found',
      message = format('no schedule named %s', public.job_queue_shown(job_schedule_retime.name));
  end if;
  perform public.job_queue_audit('schedule_retime', 'schedule:' || changed.name,
                                 to_jsonb(changed) - 'payload');
  return changed;
end;
$$;

create or replace function job_schedule_toggle(name text, active boolean default null)
  returns job_schedules
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  changed public.job_schedules;
begin
  perform public.job_queue_require_admin('job_schedule_toggle');
  update public.job_schedules s
     set active = coalesce(job_schedule_toggle.active, not s.active),
         paused_by = case when coalesce(job_schedule_toggle.active, not s.active) then null
                          else 'admin' end
   where s.name = job_schedule_toggle.name
  returning s.* into changed;
  if not found then
    raise exception using errcode = 'no_data_found',
      message = format('no schedule named %s', public.job_queue_shown(job_schedule_toggle.name));
  end if;
  perform public.job_queue_audit(
    case when changed.active then 'schedule_resume' else 'schedule_pause' end,
    'schedule:' || changed.name, to_jsonb(changed) - 'payload');
  return changed;
end;
$$;

create or replace function job_schedule_delete(name text)
  returns boolean
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
  perform public.job_queue_require_admin('job_schedule_delete');
  delete from public.job_schedules s where s.name = job_schedule_delete.name;
  if not found then
    return false;
  end if;
  perform public.job_queue_audit('schedule_delete', 'schedule:' || job_schedule_delete.name,
                                 jsonb_build_object('deleted', true));
  return true;
end;
$$;

create or replace function job_schedules_list()
  returns table (
    name                 text,
    cron                 text,
    timezone             text,
    task_type            text,
    payload              jsonb,
    queue                text,
    priority             smallint,
    max_attempts         integer,
    missed               text,
    active               boolean,
    paused_by            text,
    source               text,
    last_tick_at         timestamptz,
    next_tick_at         timestamptz,
    last_job_id          bigint,
    last_job_status      text,
    last_run_status      text,
    last_run_reason      text,
    last_run_finished_at timestamptz,
    last_run_error       text
  )
  language plpgsql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform public.job_queue_require_admin('job_schedules_list');
  return query
  select s.name, s.cron, s.timezone, s.task_type, s.payload, s.queue, s.priority,
         s.max_attempts, s.missed, s.active, s.paused_by, s.source, s.last_tick_at,
         s.next_tick_at, j.id, j.status, r.status, r.reason, r.finished_at, r.error
    from public.job_schedules s
    left join lateral (
      select q.id, q.status from public.job_queue q
       where q.schedule_name = s.name order by q.id desc limit 1) j on true
    left join lateral (
      select a.status, a.reason, a.finished_at, a.error from public.job_runs a
       where a.schedule_name = s.name order by a.id desc limit 1) r on true
   order by s.name;
end;
$$;

create or replace function job_schedule_history(name text, max_rows integer default 20)
  returns setof job_runs
  language plpgsql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform public.job_queue_require_admin('job_schedule_history');
  return query
  select r.* from public.job_runs r
   where r.schedule_name = job_schedule_history.name
   order by r.id desc
   limit least(greatest(coalesce(job_schedule_history.max_rows, 20), 1), 1000);
end;
$$;

-- The newest attempts of every schedule's jobs (cron ticks and manual runs of a schedule),
-- newest first: what `select * from cron.job_run_details order by start_time desc limit n`
-- gave an app on pg_cron. `before`: only rows with a smaller id (the next page).
create or replace function job_schedules_history(max_rows integer default 50, before bigint default null)
  returns setof job_runs
  language plpgsql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform public.job_queue_require_admin('job_schedules_history');
  if max_rows is null or max_rows not between 1 and 1000 then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('max_rows must be between 1 and 1000, not %s', coalesce(max_rows::text, 'NULL'));
  end if;
  return query
  select r.* from public.job_runs r
   where r.schedule_name is not null
     and (job_schedules_history.before is null or r.id < job_schedules_history.before)
   order by r.id desc
   limit job_schedules_history.max_rows;
end;
$$;

-- One manual run of a schedule, now (whatever its timing; paused or not), for the signed-in
-- user, or for user `requested_by` when a privileged caller names one. The new job.
create or replace function job_schedule_run_now(name text, requested_by uuid default null)
  returns table (id bigint, schedule_name text)
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  who    uuid := public.job_queue_requester('job_schedule_run_now', job_schedule_run_now.requested_by);
  new_id bigint;
begin
  insert into public.job_queue as j
    (task_type, payload, queue, priority, max_attempts, run_type, schedule_name, requested_by)
  select s.task_type, s.payload, s.queue, s.priority, s.max_attempts, 'manual', s.name, who
    from public.job_schedules s
   where s.name = job_schedule_run_now.name
  returning j.id into new_id;
  if new_id is null then
    raise exception using errcode = 'no_data_found',
      message = format('no schedule named %s', public.job_queue_shown(job_schedule_run_now.name));
  end if;
  perform public.job_queue_audit('schedule_run_now', 'job:' || new_id,
    jsonb_build_object('id', new_id, 'schedule_name', job_schedule_run_now.name));
  id := new_id;
  schedule_name := job_schedule_run_now.name;
  return next;
end;
$$;

-- == queues: 0003's pause and resume, now checked and audited ==

create or replace function job_queue_pause(queue text, reason text default null)
  returns boolean
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
  perform public.job_queue_require_admin('job_queue_pause');
  if job_queue_pause.queue is null or job_queue_pause.queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('invalid queue name %s: use 1-64 of A-Z a-z 0-9 _ . : -',
                       public.job_queue_shown(job_queue_pause.queue));
  end if;
  insert into public.job_queue_pauses (queue, paused_by, reason)
  values (job_queue_pause.queue, public.job_queue_actor(), left(job_queue_pause.reason, 500))
  on conflict (queue) do nothing;
  if not found then
    return false;
  end if;
  perform public.job_queue_audit('queue_pause', 'queue:' || job_queue_pause.queue,
                                 jsonb_build_object('changed', true));
  return true;
end;
$$;

create or replace function job_queue_resume(queue text)
  returns boolean
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
  perform public.job_queue_require_admin('job_queue_resume');
  delete from public.job_queue_pauses p where p.queue = job_queue_resume.queue;
  if not found then
    return false;
  end if;
  perform public.job_queue_audit('queue_resume', 'queue:' || job_queue_resume.queue,
                                 jsonb_build_object('changed', true));
  return true;
end;
$$;

-- == jobs ==
-- The guarded changes of the control plane (worker/admin/queries.sql calls these). Each
-- returns one row when it changed the job, none when the job does not exist or is not in a
-- state the change applies to.

-- Newest first, filtered; `before`: only ids below it (the next page). Run through EXECUTE
-- so each call is planned for its own filters (the partial indexes of 0005_dashboard.sql
-- serve the rare states).
create or replace function job_queue_list(
  status    text    default null,
  queue     text    default null,
  task_type text    default null,
  before    bigint  default null,
  max_rows  integer default 50
) returns setof job_queue
  language plpgsql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform public.job_queue_require_admin('job_queue_list');
  if status is not null
     and status not in ('pending', 'running', 'succeeded', 'failed', 'cancelled') then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('invalid status %s: use pending, running, succeeded, failed or cancelled',
                       public.job_queue_shown(status));
  end if;
  if queue is not null and queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('invalid queue name %s: use 1-64 of A-Z a-z 0-9 _ . : -',
                       public.job_queue_shown(queue));
  end if;
  if task_type is not null and task_type !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('invalid task type %s: use 1-128 of A-Z a-z 0-9 _ . : -',
                       public.job_queue_shown(task_type));
  end if;
  if max_rows is null or max_rows not between 1 and 1000 then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('max_rows must be between 1 and 1000, not %s', coalesce(max_rows::text, 'NULL'));
  end if;
  return query execute
    'select j.* from public.job_queue j
      where ($1::text is null or j.status = $1)
        and ($2::text is null or j.queue = $2)
        and ($3::text is null or j.task_type = $3)
        and ($4::bigint is null or j.id < $4)
      order by j.id desc
      limit $5'
    using status, queue, task_type, before, max_rows;
end;
$$;

-- A failed or cancelled job back to pending, due now, with one more attempt than it has
-- used (so attempt numbers in job_runs stay unique); last_error stays for the record. A
-- live job holding the same dedupe key wins: nothing changes.
create or replace function job_queue_retry(job_id bigint)
  returns table (id bigint, previous_status text, attempts integer, max_attempts integer)
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  changed record;
begin
  perform public.job_queue_require_admin('job_queue_retry');
  with old as (
    select j.id, j.status
      from public.job_queue j
     where j.id = job_queue_retry.job_id
       and j.status in ('failed', 'cancelled')
       and not exists (select 1 from public.job_queue d
                        where d.dedupe_key = j.dedupe_key and d.status in ('pending', 'running'))
       for update of j
  )
  update public.job_queue j
     set status = 'pending',
         run_at = now(),
         max_attempts = greatest(coalesce(j.max_attempts, j.attempts), j.attempts + 1),
         finished_at = null,
         locked_by = null,
         lease_expires_at = null,
         updated_at = now()
    from old
   where j.id = old.id
  returning j.id, old.status as previous_status, j.attempts, j.max_attempts into changed;
  if not found then
    return;
  end if;
  perform public.job_queue_audit('job_retry', 'job:' || changed.id, to_jsonb(changed));
  return query select changed.id, changed.previous_status, changed.attempts, changed.max_attempts;
end;
$$;

-- Cancel a pending or running job. A running attempt is closed with a 'cancelled' job_runs
-- row saying who; its worker's own outcome is then discarded by the engine's status guard,
-- and its heartbeat stops the handler (it finds the row no longer running).
create or replace function job_queue_cancel(job_id bigint)
  returns table (id bigint, previous_status text, runs_closed bigint)
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  actor   text;
  changed record;
begin
  perform public.job_queue_require_admin('job_queue_cancel');
  actor := public.job_queue_actor();
  with old as (
    select j.id, j.status, j.attempts, j.locked_by, j.started_at
      from public.job_queue j
     where j.id = job_queue_cancel.job_id and j.status in ('pending', 'running')
       for update
  ), cancelled as (
    update public.job_queue j
       set status = 'cancelled',
           finished_at = now(),
           locked_by = null,
           lease_expires_at = null,
           updated_at = now()
      from old
     where j.id = old.id
    returning j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name
  ), closed as (
    insert into public.job_runs (job_id, job_key, queue, run_type, status, reason, attempt,
                                 error, user_id, worker_id, schedule_name, started_at,
                                 finished_at, duration_ms)
    select c.id, c.task_type, c.queue, c.run_type, 'cancelled', 'cancelled_by_admin',
           o.attempts, 'cancelled by ' || actor, c.requested_by, o.locked_by,
           c.schedule_name, coalesce(o.started_at, now()), now(),
           least(greatest(0, extract(epoch from now() - coalesce(o.started_at, now())) * 1000),
                 2147483647)::int
      from cancelled c
      join old o on o.id = c.id
     where o.status = 'running'
    returning 1
  )
  select c.id, o.status as previous_status, (select count(*) from closed) as runs_closed
    into changed
    from cancelled c
    join old o on o.id = c.id;
  if not found then
    return;
  end if;
  perform public.job_queue_audit('job_cancel', 'job:' || changed.id, to_jsonb(changed));
  return query select changed.id, changed.previous_status, changed.runs_closed;
end;
$$;

-- A pending job due now (it keeps its place among due jobs by priority).
create or replace function job_queue_run_now(job_id bigint)
  returns table (id bigint, previous_run_at timestamptz)
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  changed record;
begin
  perform public.job_queue_require_admin('job_queue_run_now');
  with old as (
    select j.id, j.run_at
      from public.job_queue j
     where j.id = job_queue_run_now.job_id and j.status = 'pending'
       for update
  )
  update public.job_queue j
     set run_at = least(j.run_at, now()), updated_at = now()
    from old
   where j.id = old.id
  returning j.id, old.run_at as previous_run_at into changed;
  if not found then
    return;
  end if;
  perform public.job_queue_audit('job_run_now', 'job:' || changed.id, to_jsonb(changed));
  return query select changed.id, changed.previous_run_at;
end;
$$;

-- Who a manual run is for: the signed-in user, or (a privileged caller only) the user it
-- names. Checks the caller is an admin first; `fn` names the function for the refusal.
create or replace function job_queue_requester(fn text, requested_by uuid)
  returns uuid
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  sub text := public.job_queue_caller_sub();
  own uuid;
begin
  perform public.job_queue_require_admin(fn);
  if sub ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' then
    own := sub::uuid;
  end if;
  if public.job_queue_caller_kind() = 'privileged' then
    return coalesce(requested_by, own);
  end if;
  if requested_by is not null and requested_by is distinct from own then
    raise exception using errcode = 'insufficient_privilege',
      message = format('permission denied for function %s: only the owner or service_role may'
                       ' start a run for another user', fn);
  end if;
  return own;
end;
$$;

-- job_queue_enqueue for an admin's manual run: the same arguments, plus who it is for.
-- run_type is 'manual' and requested_by the signed-in user (auth.uid()), or the user a
-- privileged caller names. job_queue_enqueue itself is unchanged (service_role only): an
-- app's trigger or function that enqueues from a user's request is not a manual run.
-- Returns the job id; with a dedupe_key that already has a live job, that job's id.
create or replace function job_queue_enqueue_manual(
  task_type    text,
  payload      jsonb       default '{}'::jsonb,
  run_at       timestamptz default null,
  queue        text        default 'default',
  priority     integer     default 0,
  max_attempts integer     default null,
  dedupe_key   text        default null,
  requested_by uuid        default null
) returns bigint
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  who    uuid := public.job_queue_requester('job_queue_enqueue_manual',
                                            job_queue_enqueue_manual.requested_by);
  new_id bigint;
  problem text;
begin
  problem := case
    when task_type is null or task_type !~ '^[A-Za-z0-9_.:-]{1,128}$' then
      format('invalid task type %s: use 1-128 of A-Z a-z 0-9 _ . : -',
             public.job_queue_shown(task_type))
    when payload is not null and jsonb_typeof(payload) <> 'object' then
      'payload must be a JSON object'
    when queue is not null and queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
      format('invalid queue name %s: use 1-64 of A-Z a-z 0-9 _ . : -', public.job_queue_shown(queue))
    when priority is not null and priority not between -1000 and 1000 then
      'priority must be between -1000 and 1000'
    when max_attempts is not null and max_attempts not between 1 and 1000 then
      'max_attempts must be between 1 and 1000'
    when length(dedupe_key) > 512 then
      format('dedupe_key %s is longer than 512 characters', public.job_queue_shown(dedupe_key))
  end;
  if problem is not null then
    raise exception using errcode = 'invalid_parameter_value', message = problem;
  end if;
  insert into public.job_queue as j
    (task_type, payload, run_at, queue, priority, max_attempts, dedupe_key, run_type, requested_by)
  values (job_queue_enqueue_manual.task_type, coalesce(job_queue_enqueue_manual.payload, '{}'::jsonb),
          coalesce(job_queue_enqueue_manual.run_at, now()),
          coalesce(job_queue_enqueue_manual.queue, 'default'),
          coalesce(job_queue_enqueue_manual.priority, 0), job_queue_enqueue_manual.max_attempts,
          job_queue_enqueue_manual.dedupe_key, 'manual', who)
  on conflict (dedupe_key) where dedupe_key is not null and status in ('pending', 'running')
  do nothing
  returning j.id into new_id;
  if new_id is null then
    select j.id into new_id from public.job_queue j
     where j.dedupe_key = job_queue_enqueue_manual.dedupe_key and j.status in ('pending', 'running');
    return new_id;
  end if;
  perform public.job_queue_audit('job_enqueue', 'job:' || new_id,
    jsonb_build_object('id', new_id, 'status', 'pending', 'created', true));
  return new_id;
end;
$$;

-- == grants and row level security ==
-- Objects named one by one, as in 0007_api_role_grants.sql: each API role loses every right
-- on each object here, then gets exactly what README.md's "Access control" table says, with
-- or without Supabase's default privileges.
do $$
declare
  -- The admin RPCs: an app's admins (the check inside) and service_role.
  admin_functions constant text :=
    'public.job_schedule_create(text, text, text, jsonb, text, text, integer, integer, text, boolean), '
    'public.job_schedule_update(text, text, text, text, jsonb, text, integer, integer, text), '
    'public.job_schedule_retime(text, text, text), '
    'public.job_schedule_toggle(text, boolean), '
    'public.job_schedule_delete(text), '
    'public.job_schedules_list(), '
    'public.job_schedule_history(text, integer), '
    'public.job_schedules_history(integer, bigint), '
    'public.job_schedule_run_now(text, uuid), '
    'public.job_queue_pause(text, text), '
    'public.job_queue_resume(text), '
    'public.job_queue_list(text, text, text, bigint, integer), '
    'public.job_queue_retry(bigint), '
    'public.job_queue_cancel(bigint), '
    'public.job_queue_run_now(bigint), '
    'public.job_queue_enqueue_manual(text, jsonb, timestamptz, text, integer, integer, text, uuid), '
    'public.job_queue_is_admin()';
  -- The owner's helpers, called inside the definers above.
  owner_functions constant text :=
    'public.job_queue_shown(text), public.job_queue_caller_sub(), public.job_queue_caller_role(), '
    'public.job_queue_caller_kind(), public.job_queue_actor(), '
    'public.job_queue_audit(text, text, jsonb), public.job_queue_admin_check_problem(oid), '
    'public.job_queue_admin_check_function(), public.job_queue_admin_refusal(), '
    'public.job_queue_require_admin(text), public.job_queue_requester(text, uuid)';
  setter constant text := 'public.job_queue_set_admin_check(regprocedure)';
  api_role text;
begin
  execute format('revoke all on function %s, %s, %s from public', admin_functions,
                 owner_functions, setter);
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on table public.job_admin_check from %I', api_role);
      execute format('revoke all on function %s, %s, %s from %I', admin_functions,
                     owner_functions, setter, api_role);
    end if;
  end loop;

  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    execute format('grant execute on function %s to authenticated', admin_functions);
    -- Admins read job_queue (everyone else signed in sees no row). The policy's sub-select
    -- runs the check once per statement, not once per row.
    grant select on table public.job_queue to authenticated;
    drop policy if exists job_queue_admin_read on public.job_queue;
    create policy job_queue_admin_read on public.job_queue
      for select to authenticated using ((select public.job_queue_is_admin()));
  end if;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    execute format('grant execute on function %s, %s to service_role', admin_functions, setter);
    grant select on table public.job_admin_check to service_role;
  end if;
end;
$$;
