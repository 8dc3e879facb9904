-- The built-in cron scheduler: what a schedule may say (checked on every write, with the
-- same messages as worker/scheduler.py), the columns its compare-and-set needs, and the
-- admin functions (Supabase RPCs) to create, toggle, re-time, list and inspect schedules.
-- See README.md, "Schedules". Written for PostgreSQL 14 through 18.

-- revision: bumped by every change to what a schedule does; the scheduler's write is
--   conditional on it, so a pass that read the old definition changes nothing.
-- source: 'file' (synced from the schedule file at start) or 'admin' (CLI, SQL).
-- paused_by: who paused an inactive schedule; the file sync never lifts an admin's pause.
alter table job_schedules
  add column if not exists revision  integer not null default 1,
  add column if not exists source    text    not null default 'admin',
  add column if not exists paused_by text;

alter table job_schedules drop constraint if exists job_schedules_source_check;
alter table job_schedules add constraint job_schedules_source_check
  check (source in ('file', 'admin'));
alter table job_schedules drop constraint if exists job_schedules_paused_by_check;
alter table job_schedules add constraint job_schedules_paused_by_check
  check (paused_by in ('file', 'admin'));

-- "Last result" of a schedule for the admin list; the history of one schedule.
create index if not exists job_queue_schedule_idx
  on job_queue (schedule_name, id) where schedule_name is not null;
create index if not exists job_runs_schedule_idx
  on job_runs (schedule_name, id) where schedule_name is not null;

-- Why `expr` is not a cron expression schedules accept (null: it is). The grammar: 5
-- fields of `*`, numbers, names (jan-dec, sun-sat), ranges a-b, steps /n and lists a,b;
-- or an alias (@yearly @annually @monthly @weekly @daily @midnight @hourly).
create or replace function job_schedule_cron_value(token text, field integer)
  returns integer
  language sql
  immutable
  set search_path = pg_catalog
as $$
  select case
    when token ~ '^[0-9]+$' then token::integer
    when field = 4 then array_position(
      array['jan','feb','mar','apr','may','jun','jul','aug','sep','oct','nov','dec'], token)
    when field = 5 then array_position(
      array['sun','mon','tue','wed','thu','fri','sat'], token) - 1
  end;
$$;

create or replace function job_schedule_cron_error(expr text)
  returns text
  language plpgsql
  immutable
  set search_path = pg_catalog
as $$
declare
  field_names constant text[] := array['minute', 'hour', 'day-of-month', 'month', 'day-of-week'];
  lows        constant integer[] := array[0, 0, 1, 1, 0];
  highs       constant integer[] := array[59, 23, 31, 12, 7];
  sizes       constant integer[] := array[60, 24, 31, 12, 7];
  month_days  constant integer[] := array[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  aliases     constant text[] :=
    array['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly'];
  cleaned text;
  bad     text;
  fields  text[];
  item    text;
  parts   text[];
  token   text;
  f       integer;
  v       integer;
  lo      integer;
  hi      integer;
  step    integer;
  days    integer[] := '{}';
  months  integer[] := '{}';
begin
  if expr is null then
    return 'a cron expression is required';
  end if;
  if length(expr) > 200 then
    return 'longer than 200 characters';
  end if;
  bad := substring(expr from '[^[:blank:]0-9A-Za-z*,/@-]');
  if bad is not null then
    return format('unexpected character ''%s''', bad);
  end if;
  cleaned := lower(regexp_replace(expr, '^[[:blank:]]+|[[:blank:]]+$', '', 'g'));
  if left(cleaned, 1) = '@' then
    if cleaned = any(aliases) then
      return null;
    end if;
    return format('unknown alias ''%s'': use @yearly, @annually, @monthly, @weekly, @daily, '
                  '@midnight or @hourly', cleaned);
  end if;
  fields := case when cleaned = '' then '{}'::text[]
                 else regexp_split_to_array(cleaned, '[[:blank:]]+') end;
  if cardinality(fields) <> 5 then
    return format('expected 5 fields (minute hour day-of-month month day-of-week), got %s',
                  cardinality(fields));
  end if;
  for f in 1..5 loop
    foreach item in array string_to_array(fields[f], ',') loop
      parts := regexp_match(item, '^(\*|([a-z0-9]{1,9})(-([a-z0-9]{1,9}))?)(/([0-9]{1,9}))?$');
      if parts is null then
        return format('%s field: cannot read ''%s''', field_names[f], item);
      end if;
      if parts[1] = '*' then
        lo := lows[f];
        hi := case when f = 5 then 6 else highs[f] end;
      else
        foreach token in array array_remove(array[parts[2], parts[4]], null) loop
          v := public.job_schedule_cron_value(token, f);
          if v is null then
            return format('%s field: ''%s'' is not a valid value', field_names[f], token);
          end if;
          if v < lows[f] or v > highs[f] then
            return format('%s value %s is out of range %s-%s', field_names[f], v, lows[f], highs[f]);
          end if;
        end loop;
        lo := public.job_schedule_cron_value(parts[2], f);
        hi := case when parts[4] is not null then public.job_schedule_cron_value(parts[4], f)
                   when parts[6] is not null then highs[f]
                   else lo end;
        if lo > hi then
          return format('%s range %s-%s runs backwards', field_names[f], parts[2], parts[4]);
        end if;
      end if;
      step := 1;
      if parts[6] is not null then
        step := parts[6]::integer;
        if step < 1 or step > sizes[f] then
          return format('%s step %s must be between 1 and %s', field_names[f], step, sizes[f]);
        end if;
      end if;
      if f = 3 then
        days := days || array(select generate_series(lo, hi, step));
      elsif f = 4 then
        months := months || array(select generate_series(lo, hi, step));
      end if;
    end loop;
  end loop;
  -- With day-of-week `*` only day-of-month picks days: "30 2" (February 30th) never runs.
  if fields[5] = '*' and fields[3] <> '*' then
    lo := (select min(d) from unnest(days) d);
    if lo > (select max(month_days[m]) from unnest(months) m) then
      return format('day-of-month %s never occurs in the months listed, so it would never run', lo);
    end if;
  end if;
  return null;
end;
$$;

-- Why `tz` is not an IANA timezone name (null: it is). The SET clause keeps the probe's
-- set_config local to this function.
create or replace function job_schedule_timezone_error(tz text)
  returns text
  language plpgsql
  stable
  set search_path = pg_catalog
  set timezone = 'UTC'
as $$
declare
  head      text;
  unknown   text;
  canonical text;
begin
  if tz is null or tz = '' then
    return 'a timezone is required';
  end if;
  unknown := format('unknown timezone ''%s'': use an IANA name such as UTC or Europe/London', tz);
  head := split_part(tz, '/', 1);
  -- POSIX TZ strings (UTC+3, EST5) are not zones; a few real zone names have digits.
  if tz !~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$'
     or (head ~ '[0-9+]'
         and head not in ('EST5EDT', 'CST6CDT', 'MST7MDT', 'PST8PDT', 'GMT0', 'GMT+0', 'GMT-0'))
     or lower(head) in ('posix', 'right', 'localtime', 'posixrules') then
    return unknown;
  end if;
  begin
    perform set_config('timezone', tz, true);
  exception when invalid_parameter_value then
    return unknown;
  end;
  canonical := current_setting('timezone');
  if canonical <> tz then
    return format('unknown timezone ''%s'': did you mean ''%s''?', tz, canonical);
  end if;
  return null;
end;
$$;

-- The first problem with a schedule's definition (null: none), in the words of
-- worker/scheduler.py's schedule_problem().
create or replace function job_schedule_problem(
  name         text,
  cron         text,
  timezone     text,
  task_type    text,
  payload      jsonb,
  queue        text,
  priority     integer,
  max_attempts integer,
  missed       text
) returns text
  language plpgsql
  stable
  set search_path = pg_catalog
as $$
declare
  problem text;
begin
  if name is null then
    return 'a schedule name is required';
  elsif name !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    return format('invalid schedule name ''%s'': use 1-128 of A-Z a-z 0-9 _ . : -', name);
  end if;
  problem := public.job_schedule_cron_error(cron);
  if problem is not null then
    return case when cron is null then problem
                else format('invalid cron expression ''%s'': %s', cron, problem) end;
  end if;
  problem := public.job_schedule_timezone_error(timezone);
  if problem is not null then
    return problem;
  end if;
  if task_type is null then
    return 'a task type is required';
  elsif task_type !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    return format('invalid task type ''%s'': use 1-128 of A-Z a-z 0-9 _ . : -', task_type);
  end if;
  if payload is null or jsonb_typeof(payload) <> 'object' then
    return 'payload must be a JSON object';
  end if;
  if queue is null then
    return 'a queue is required';
  elsif queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
    return format('invalid queue name ''%s'': use 1-64 of A-Z a-z 0-9 _ . : -', queue);
  end if;
  if priority is null or priority not between -1000 and 1000 then
    return 'priority must be between -1000 and 1000';
  end if;
  if max_attempts is not null and max_attempts not between 1 and 1000 then
    return 'max_attempts must be between 1 and 1000';
  end if;
  if missed is null or missed not in ('latest', 'skip', 'all') then
    return format('invalid missed-tick policy ''%s'': use latest, skip or all', missed);
  end if;
  return null;
end;
$$;

-- Every write path (the functions below, the CLI, the file sync, a plain INSERT or UPDATE
-- from the Supabase table editor) goes through this trigger:
-- - a new or changed definition is checked, and refused with a clear message;
-- - a change to what the schedule does bumps `revision` (the scheduler's write is
--   conditional on it);
-- - a new, re-timed or resumed schedule owes no tick from before now: `last_tick_at` moves
--   up to now() (never backwards) and `next_tick_at` is recomputed by the scheduler;
-- - `paused_by` is null while active, and says who paused it otherwise ('admin' unless the
--   writer said 'file').
create or replace function job_schedules_guard()
  returns trigger
  language plpgsql
  set search_path = pg_catalog, public
as $$
declare
  problem text;
begin
  if tg_op = 'INSERT'
     or (new.name, new.cron, new.timezone, new.task_type, new.payload, new.queue, new.priority,
         new.max_attempts, new.missed)
        is distinct from
        (old.name, old.cron, old.timezone, old.task_type, old.payload, old.queue, old.priority,
         old.max_attempts, old.missed) then
    problem := public.job_schedule_problem(new.name, new.cron, new.timezone, new.task_type,
                                           new.payload, new.queue, new.priority,
                                           new.max_attempts, new.missed);
    if problem is not null then
      raise exception using errcode = 'invalid_parameter_value', message = problem;
    end if;
  end if;
  if tg_op = 'INSERT' then
    new.last_tick_at := coalesce(new.last_tick_at, now());
  else
    if (new.cron, new.timezone, new.task_type, new.payload, new.queue, new.priority,
        new.max_attempts, new.missed, new.active)
       is distinct from
       (old.cron, old.timezone, old.task_type, old.payload, old.queue, old.priority,
        old.max_attempts, old.missed, old.active) then
      new.revision := old.revision + 1;
      new.updated_at := now();
    end if;
    if new.cron is distinct from old.cron or new.timezone is distinct from old.timezone
       or (new.active and not old.active) then
      new.last_tick_at := greatest(old.last_tick_at, new.last_tick_at, now());
      new.next_tick_at := null;
    end if;
  end if;
  new.paused_by := case when new.active then null else coalesce(new.paused_by, 'admin') end;
  return new;
end;
$$;

drop trigger if exists job_schedules_guard on job_schedules;
create trigger job_schedules_guard
  before insert or update on job_schedules
  for each row execute function job_schedules_guard();

-- Admin functions (Supabase RPCs). Errors: 22023 invalid input, 23505 the name is taken,
-- P0002 no such schedule; the message is one line fit to show an admin.

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
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
declare
  created public.job_schedules;
begin
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
  return created;
end;
$$;

-- Change any of a schedule's fields; null leaves a field as it is.
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
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
declare
  changed public.job_schedules;
begin
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
      message = format('no schedule named ''%s''', job_schedule_update.name);
  end if;
  return changed;
end;
$$;

-- Re-time: a new cron expression (and optionally timezone). Ticks of the old timing that
-- were not enqueued yet are dropped; the new timing starts from now.
create or replace function job_schedule_retime(name text, cron text, timezone text default null)
  returns job_schedules
  language sql
  security definer
  set search_path = pg_catalog, public
as $$
  select * from public.job_schedule_update(name => $1, cron => $2, timezone => $3);
$$;

-- Pause (active => false), resume (true) or flip (null). A resumed schedule does not run
-- the ticks it missed while paused.
create or replace function job_schedule_toggle(name text, active boolean default null)
  returns job_schedules
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
declare
  changed public.job_schedules;
begin
  update public.job_schedules s
     set active = coalesce(job_schedule_toggle.active, not s.active),
         paused_by = case when coalesce(job_schedule_toggle.active, not s.active) then null
                          else 'admin' end
   where s.name = job_schedule_toggle.name
  returning s.* into changed;
  if not found then
    raise exception using errcode = 'no_data_found',
      message = format('no schedule named ''%s''', job_schedule_toggle.name);
  end if;
  return changed;
end;
$$;

-- Remove a schedule (its jobs and their history stay). False: there was none.
create or replace function job_schedule_delete(name text)
  returns boolean
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
begin
  delete from public.job_schedules s where s.name = job_schedule_delete.name;
  return found;
end;
$$;

-- Every schedule with its next run (computed by the scheduler; null until a scheduler has
-- seen a new, re-timed or resumed schedule) and its last job and last attempt.
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
  language sql
  stable
  security definer
  set search_path = pg_catalog, public
as $$
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
$$;

-- The newest attempts (job_runs rows) of one schedule's jobs, newest first.
create or replace function job_schedule_history(name text, max_rows integer default 20)
  returns setof job_runs
  language sql
  stable
  security definer
  set search_path = pg_catalog, public
as $$
  select r.* from public.job_runs r
   where r.schedule_name = $1
   order by r.id desc
   limit least(greatest(coalesce($2, 20), 1), 1000);
$$;

-- The validators stay executable by everyone: the trigger runs them as whoever writes.
revoke all on function job_schedule_create(text, text, text, jsonb, text, text, integer, integer, text, boolean) from public;
revoke all on function job_schedule_update(text, text, text, text, jsonb, text, integer, integer, text) from public;
revoke all on function job_schedule_retime(text, text, text) from public;
revoke all on function job_schedule_toggle(text, boolean) from public;
revoke all on function job_schedule_delete(text) from public;
revoke all on function job_schedules_list() from public;
revoke all on function job_schedule_history(text, integer) from public;
revoke all on function job_schedules_guard() from public;

do $$
declare
  admin_functions constant text[] := array[
    'job_schedule_create(text, text, text, jsonb, text, text, integer, integer, text, boolean)',
    'job_schedule_update(text, text, text, text, jsonb, text, integer, integer, text)',
    'job_schedule_retime(text, text, text)',
    'job_schedule_toggle(text, boolean)',
    'job_schedule_delete(text)',
    'job_schedules_list()',
    'job_schedule_history(text, integer)'];
  fn text;
begin
  foreach fn in array admin_functions loop
    if exists (select 1 from pg_roles where rolname = 'anon') then
      execute format('revoke all on function %s from anon', fn);
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
      execute format('revoke all on function %s from authenticated', fn);
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant execute on function %s to service_role', fn);
    end if;
  end loop;
end;
$$;
