-- Workflows: jobs that wait for other jobs (depends_on), fan-out and fan-in (groups).
-- Written for PostgreSQL 14 through 18.
--
-- A job enqueued with parents that have not all succeeded is `waiting`: not `pending`, so it
-- is never in the claim's index (job_queue_ready_idx, where status = 'pending') and a
-- million waiting jobs cost the claim nothing. job_queue_release moves a waiting job on
-- once its parents are final: to `pending` when all succeeded, to `cancelled` (a job_runs
-- row with reason 'parent_failed', and on through its own waiting descendants) when one
-- failed for good or was cancelled, unless it asked to run anyway (on_parent_failure =
-- 'run': pending once every parent is final). Parents must exist when the child is
-- written, so no cycle can be built.

alter table job_queue drop constraint if exists job_queue_status_check;
alter table job_queue add constraint job_queue_status_check
  check (status in ('waiting', 'pending', 'running', 'succeeded', 'failed', 'cancelled'))
  not valid;
alter table job_queue validate constraint job_queue_status_check;

-- Null for a job without parents (no byte stored); 'cancel' or 'run' for one with parents.
alter table job_queue add column if not exists on_parent_failure text;
alter table job_queue drop constraint if exists job_queue_on_parent_failure_check;
alter table job_queue add constraint job_queue_on_parent_failure_check
  check (on_parent_failure is null or on_parent_failure in ('cancel', 'run'));
-- True while children may wait on this job: set when a child is enqueued before this job is
-- final, cleared by the release that moved them on. The finishing statement releases only
-- jobs it finds true, so jobs without children pay nothing; and a final job still true is a
-- release that did not happen (a crash right after the commit): the sweep's index below.
alter table job_queue add column if not exists has_children boolean not null default false;
create index if not exists job_queue_unreleased_idx
  on job_queue (id) where has_children and status in ('succeeded', 'failed', 'cancelled');
-- Waiting jobs, for the dashboard's and status's counts (a rare state, as 0005's indexes).
create index if not exists job_queue_waiting_idx on job_queue (id) where status = 'waiting';
create index if not exists job_queue_waiting_by_idx
  on job_queue (queue, task_type) where status = 'waiting';

-- Child -> parent edges. No foreign keys: they would put a trigger on every write of
-- job_queue; parents are checked at enqueue and edges go with their child (prune_jobs).
create table if not exists job_dependencies (
  child_id  bigint not null,
  parent_id bigint not null,
  primary key (child_id, parent_id)
);
create index if not exists job_dependencies_parent_idx on job_dependencies (parent_id);
alter table job_dependencies enable row level security;

-- Move on the waiting children of `parent_ids` (jobs that became final), and theirs in
-- turn when cancelled. Race-free against parents finishing at once: the children are
-- locked in id order first, and their parents read by a later statement, so of two
-- releases deciding one child the second sees the first's parent final. Called right after
-- the commit that made the parents final (the worker), or in the same transaction (admin
-- cancel). Returns how many children moved. Parents not final are left as they are.
create or replace function job_queue_release(parent_ids bigint[]) returns integer
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  parents bigint[] := coalesce(parent_ids, '{}');
  kids    bigint[];
  moved   integer := 0;
  n       integer;
  woke    integer;
begin
  while cardinality(parents) > 0 loop
    select coalesce(array_agg(w.id), '{}') into kids
      from (select c.id
              from public.job_queue c
             where c.id in (select d.child_id from public.job_dependencies d
                             where d.parent_id = any (parents))
               and c.status = 'waiting'
             order by c.id
               for update of c) w;
    with verdict as (
      select c.id, coalesce(c.on_parent_failure, 'cancel') as policy,
             bool_and(p.status = 'succeeded') as all_succeeded,
             bool_and(p.status in ('succeeded', 'failed', 'cancelled')) as all_final,
             min(p.id) filter (where p.status in ('failed', 'cancelled')) as bad_parent,
             min(p.status) filter (where p.status in ('failed', 'cancelled')) as bad_status
        from public.job_queue c
        join public.job_dependencies d on d.child_id = c.id
        join public.job_queue p on p.id = d.parent_id
       where c.id = any (kids)
       group by c.id, c.on_parent_failure
    ), ready as (
      update public.job_queue j
         set status = 'pending', run_at = greatest(j.run_at, now()), updated_at = now()
        from verdict v
       where j.id = v.id
         and (v.all_succeeded or (v.all_final and v.policy = 'run'))
      returning j.id
    ), doomed as (
      update public.job_queue j
         set status = 'cancelled',
             finished_at = now(),
             last_error = 'parent job ' || v.bad_parent || ' ' || v.bad_status,
             updated_at = now()
        from verdict v
       where j.id = v.id
         and v.bad_parent is not null
         and v.policy = 'cancel'
      returning j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name,
                j.attempts, j.last_error, j.has_children
    ), audited as (
      insert into public.job_runs (job_id, job_key, queue, run_type, status, reason, attempt,
                                   error, user_id, schedule_name, started_at, finished_at,
                                   duration_ms)
      select x.id, x.task_type, x.queue, x.run_type, 'cancelled', 'parent_failed', x.attempts,
             x.last_error, x.requested_by, x.schedule_name, now(), now(), 0
        from doomed x
      returning 1
    ), cleared as (
      update public.job_queue j
         set has_children = false
       where j.id = any (parents)
         and j.has_children
         and j.status in ('succeeded', 'failed', 'cancelled')
      returning 1
    )
    select (select count(*) from ready), (select count(*) from doomed),
           coalesce((select array_agg(x.id order by x.id) from doomed x where x.has_children), '{}')
      into woke, n, parents
      from (select count(*) from audited) a, (select count(*) from cleared) c;
    if woke > 0 then
      -- Wake idle workers, as an insert does: one notification per release, never per job.
      perform pg_catalog.pg_notify('job_queue', '');
    end if;
    moved := moved + woke + n;
  end loop;
  return moved;
end;
$$;

-- Enqueue from SQL, pg_cron or a Supabase RPC, now also with parents, an on-parent-failure
-- policy, a concurrency key (0010) and a trace context (0012). Every earlier argument keeps
-- its position and default. Returns the job id; with a dedupe_key that already has a live
-- job, that job's id (nothing inserted). A refused argument raises 22023 with one line
-- naming it (echoed values cut by job_queue_shown).
--
-- depends_on: ids of jobs that must exist. Their rows are locked (in id order) for the rest
-- of the transaction, so no parent can finish between reading its status and writing the
-- child: all succeeded -> the child is pending; one failed or cancelled -> cancelled (unless
-- on_parent_failure = 'run': then pending if every parent is final); else waiting, and each
-- unfinished parent is marked has_children so that its finish releases the child. (A
-- parent's finish waits for this transaction: enqueue children in short transactions.)
-- A dedupe_key with depends_on is refused: the key would only hold once the job is due.
drop function if exists job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text);
create or replace function job_queue_enqueue(
  task_type         text,
  payload           jsonb       default '{}'::jsonb,
  run_at            timestamptz default null,
  queue             text        default 'default',
  priority          integer     default 0,
  max_attempts      integer     default null,
  dedupe_key        text        default null,
  depends_on        bigint[]    default null,
  on_parent_failure text        default 'cancel',
  concurrency_key   text        default null,
  trace_context     jsonb       default null
) returns bigint
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  parents       bigint[];
  missing       bigint[];
  found_parents integer;
  all_succeeded boolean;
  all_final     boolean;
  bad_parent    bigint;
  bad_status    text;
  initial       text := 'pending';
  new_id        bigint;
  problem       text;
begin
  problem := case
    when job_queue_enqueue.task_type is null
         or job_queue_enqueue.task_type !~ '^[A-Za-z0-9_.:-]{1,128}$' then
      format('invalid task type %s: use 1-128 of A-Z a-z 0-9 _ . : -',
             public.job_queue_shown(job_queue_enqueue.task_type))
    when job_queue_enqueue.payload is not null
         and jsonb_typeof(job_queue_enqueue.payload) <> 'object' then
      'payload must be a JSON object'
    when job_queue_enqueue.queue is not null
         and job_queue_enqueue.queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
      format('invalid queue name %s: use 1-64 of A-Z a-z 0-9 _ . : -',
             public.job_queue_shown(job_queue_enqueue.queue))
    when job_queue_enqueue.priority not between -1000 and 1000 then
      'priority must be between -1000 and 1000'
    when job_queue_enqueue.max_attempts not between 1 and 1000 then
      'max_attempts must be between 1 and 1000'
    when length(job_queue_enqueue.dedupe_key) > 512 then
      format('dedupe_key %s is longer than 512 characters',
             public.job_queue_shown(job_queue_enqueue.dedupe_key))
    when job_queue_enqueue.on_parent_failure is null
         or job_queue_enqueue.on_parent_failure not in ('cancel', 'run') then
      format('on_parent_failure must be cancel or run, not %s',
             public.job_queue_shown(job_queue_enqueue.on_parent_failure))
    when length(job_queue_enqueue.concurrency_key) > 200 then
      format('concurrency_key %s is longer than 200 characters',
             public.job_queue_shown(job_queue_enqueue.concurrency_key))
    when job_queue_enqueue.trace_context is not null
         and (jsonb_typeof(job_queue_enqueue.trace_context) <> 'object'
              or length(job_queue_enqueue.trace_context::text) > 2048) then
      'trace_context must be a JSON object of at most 2048 characters'
    when cardinality(job_queue_enqueue.depends_on) > 1000 then
      format('depends_on names %s jobs: at most 1000', cardinality(job_queue_enqueue.depends_on))
    when array_position(job_queue_enqueue.depends_on, null) is not null then
      'depends_on must not contain null'
    when job_queue_enqueue.dedupe_key is not null
         and cardinality(job_queue_enqueue.depends_on) > 0 then
      'a job with depends_on cannot have a dedupe_key'
  end;
  if problem is not null then
    raise exception using errcode = 'invalid_parameter_value', message = problem;
  end if;

  if cardinality(job_queue_enqueue.depends_on) > 0 then
    parents := array(select distinct p from unnest(job_queue_enqueue.depends_on) p order by p);
    with locked as (
      select j.id, j.status from public.job_queue j
       where j.id = any (parents)
       order by j.id
         for update of j
    )
    select count(*)::int, bool_and(l.status = 'succeeded'),
           bool_and(l.status in ('succeeded', 'failed', 'cancelled')),
           min(l.id) filter (where l.status in ('failed', 'cancelled')),
           min(l.status) filter (where l.status in ('failed', 'cancelled'))
      into found_parents, all_succeeded, all_final, bad_parent, bad_status
      from locked l;
    if found_parents < cardinality(parents) then
      missing := array(select p from unnest(parents) p
                        where not exists (select 1 from public.job_queue j where j.id = p)
                        order by p);
      raise exception using errcode = 'invalid_parameter_value',
        message = format('depends_on: no job %s%s', array_to_string(missing[1:5], ', '),
                         case when cardinality(missing) > 5
                              then format(' (and %s more)', cardinality(missing) - 5)
                              else '' end);
    end if;
    update public.job_queue j
       set has_children = true
     where j.id = any (parents)
       and not j.has_children
       and j.status not in ('succeeded', 'failed', 'cancelled');
    initial := case
      when all_succeeded then 'pending'
      when bad_parent is not null and job_queue_enqueue.on_parent_failure = 'cancel' then 'cancelled'
      when all_final then 'pending'
      else 'waiting'
    end;
  end if;

  insert into public.job_queue as j
    (task_type, payload, run_at, queue, priority, max_attempts, dedupe_key, status,
     on_parent_failure, concurrency_key, trace_context, finished_at, last_error)
  values (job_queue_enqueue.task_type, coalesce(job_queue_enqueue.payload, '{}'::jsonb),
          coalesce(job_queue_enqueue.run_at, now()), coalesce(job_queue_enqueue.queue, 'default'),
          coalesce(job_queue_enqueue.priority, 0), job_queue_enqueue.max_attempts,
          job_queue_enqueue.dedupe_key, initial,
          case when parents is not null then job_queue_enqueue.on_parent_failure end,
          job_queue_enqueue.concurrency_key, job_queue_enqueue.trace_context,
          case when initial = 'cancelled' then now() end,
          case when initial = 'cancelled' then 'parent job ' || bad_parent || ' ' || bad_status end)
  on conflict (dedupe_key) where dedupe_key is not null and status in ('pending', 'running')
  do nothing
  returning j.id into new_id;
  if new_id is null then
    select j.id into new_id from public.job_queue j
     where j.dedupe_key = job_queue_enqueue.dedupe_key and j.status in ('pending', 'running');
    return new_id;
  end if;
  if parents is not null then
    insert into public.job_dependencies (child_id, parent_id)
    select new_id, p from unnest(parents) p;
  end if;
  if initial = 'cancelled' then
    insert into public.job_runs (job_id, job_key, queue, run_type, status, reason, attempt, error,
                                 started_at, finished_at, duration_ms)
    select j.id, j.task_type, j.queue, j.run_type, 'cancelled', 'parent_failed', 0, j.last_error,
           now(), now(), 0
      from public.job_queue j
     where j.id = new_id;
  end if;
  return new_id;
end;
$$;

-- Fan-out and fan-in in one call, atomically: each element of `children` (a JSON array of
-- jobs: {"task_type", "payload", "queue", "priority", "run_at", "max_attempts",
-- "dedupe_key", "concurrency_key", "depends_on"}) is enqueued, then `finalizer` (a job of
-- the same shape) depending on all of them with on_parent_failure 'run': it runs once every
-- child is final and reads their outcomes (ctx.parent_results()). Returns the children's
-- ids in order, then the finalizer's.
create or replace function job_queue_enqueue_group(children jsonb, finalizer jsonb)
  returns bigint[]
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  known constant text[] := array['task_type', 'payload', 'queue', 'priority', 'run_at',
                                 'max_attempts', 'dedupe_key', 'concurrency_key', 'depends_on'];
  spec   jsonb;
  extra  text;
  ids    bigint[] := '{}';
  which  integer := 0;
begin
  if children is null or jsonb_typeof(children) <> 'array' or jsonb_array_length(children) = 0 then
    raise exception using errcode = 'invalid_parameter_value',
      message = 'children must be a non-empty JSON array of jobs';
  end if;
  if jsonb_array_length(children) > 1000 then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('a group has at most 1000 children, not %s', jsonb_array_length(children));
  end if;
  if finalizer is null or jsonb_typeof(finalizer) <> 'object' then
    raise exception using errcode = 'invalid_parameter_value',
      message = 'finalizer must be a JSON object (a job)';
  end if;
  for spec in select value from jsonb_array_elements(children || jsonb_build_array(finalizer)) loop
    which := which + 1;
    if jsonb_typeof(spec) <> 'object' then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('group job %s must be a JSON object', which);
    end if;
    select k into extra from jsonb_object_keys(spec) k where k <> all (known) limit 1;
    if extra is not null then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('group job %s: unknown field %s', which, public.job_queue_shown(extra));
    end if;
    ids := ids || public.job_queue_enqueue(
      task_type => spec ->> 'task_type',
      payload => coalesce(spec -> 'payload', '{}'::jsonb),
      run_at => (spec ->> 'run_at')::timestamptz,
      queue => coalesce(spec ->> 'queue', 'default'),
      priority => coalesce((spec ->> 'priority')::integer, 0),
      max_attempts => (spec ->> 'max_attempts')::integer,
      dedupe_key => spec ->> 'dedupe_key',
      depends_on => case when which > jsonb_array_length(children) then ids else '{}' end
                    || array(select jsonb_array_elements_text(
                                      coalesce(spec -> 'depends_on', '[]'::jsonb))::bigint),
      on_parent_failure => case when which > jsonb_array_length(children) then 'run'
                                else 'cancel' end,
      concurrency_key => spec ->> 'concurrency_key');
  end loop;
  return ids;
end;
$$;

-- Admin cancel (0009), now also of a waiting job, and releasing the job's children in the
-- same transaction: each waiting child is cancelled in turn (reason 'parent_failed'), or
-- runs once its parents are final if it asked to. Same signature: grants stay.
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
     where j.id = job_queue_cancel.job_id and j.status in ('waiting', 'pending', 'running')
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
    returning j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name,
              j.has_children
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
  select c.id, o.status as previous_status, (select count(*) from closed) as runs_closed,
         c.has_children
    into changed
    from cancelled c
    join old o on o.id = c.id;
  if not found then
    return;
  end if;
  if changed.has_children then
    perform public.job_queue_release(array[changed.id]);
  end if;
  perform public.job_queue_audit('job_cancel', 'job:' || changed.id,
                                 to_jsonb(changed) - 'has_children');
  return query select changed.id, changed.previous_status, changed.runs_closed;
end;
$$;

-- The admin list (0009) knows the new status. Same signature: grants stay.
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
     and status not in ('waiting', 'pending', 'running', 'succeeded', 'failed', 'cancelled') then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('invalid status %s: one of waiting pending running succeeded failed cancelled',
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

-- The worker's role also writes and reads the edges, releases children and enqueues groups
-- (a handler fanning out): the grant function of 0011, re-stated with those added.
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
  execute format('grant select, insert, delete on public.job_dependencies to %I', worker_role);
  execute format('grant execute on function public.job_queue_release(bigint[]) to %I', worker_role);
  execute format('grant execute on function public.job_queue_enqueue_group(jsonb, jsonb) to %I',
                 worker_role);

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
  execute format('drop policy if exists %I on public.job_dependencies', policy);
  execute format('create policy %I on public.job_dependencies for all to %I using (true) with check (true)',
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

-- Grants, as 0007 states them: each API role loses every right on each new object, then
-- gets exactly what README.md's "Access control" table says. job_queue_enqueue is new (its
-- signature changed): service_role only, as before. The group enqueue is an admin RPC too;
-- release runs as its caller (the worker: service_role or the worker's role).
do $$
declare
  functions constant text :=
    'public.job_queue_enqueue(text, jsonb, timestamptz, text, integer, integer, text, bigint[], '
    'text, text, jsonb), public.job_queue_enqueue_group(jsonb, jsonb), '
    'public.job_queue_release(bigint[])';
  api_role text;
begin
  execute format('revoke all on function %s from public', functions);
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_roles where rolname = api_role) then
      execute format('revoke all on table public.job_dependencies from %I', api_role);
      execute format('revoke all on function %s from %I', functions, api_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.job_dependencies to service_role;
    execute format('grant execute on function %s to service_role', functions);
  end if;
  if exists (select 1 from pg_roles where rolname = 'job_worker') then
    perform job_queue_grant_worker('job_worker');
  end if;
end;
$$;
