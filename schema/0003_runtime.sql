-- The production runtime: paused queues, and an index for retention.

-- A queue listed here is not claimed from by any worker. Rows already running finish.
create table if not exists job_queue_pauses (
  queue      text primary key,
  paused_at  timestamptz not null default now(),
  paused_by  text,
  reason     text,
  constraint job_queue_pauses_queue_check check (queue ~ '^[A-Za-z0-9_.:-]{1,64}$')
);
alter table job_queue_pauses enable row level security;

-- Retention walks old rows by creation time. BRIN, not btree: a few pages for the whole
-- table, and inserting in id/created_at order keeps it accurate without adding index
-- writes to the claim and finish hot path.
create index if not exists job_queue_created_brin on job_queue using brin (created_at);

create or replace function job_queue_pause(queue text, reason text default null)
  returns boolean
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
begin
  if job_queue_pause.queue is null or job_queue_pause.queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
    raise exception 'invalid queue name %: use 1-64 of A-Z a-z 0-9 _ . : -',
      coalesce(quote_literal(job_queue_pause.queue), 'NULL')
      using errcode = '22023';
  end if;
  insert into public.job_queue_pauses (queue, paused_by, reason)
  values (job_queue_pause.queue, current_user, left(job_queue_pause.reason, 500))
  on conflict (queue) do nothing;
  return found;
end;
$$;

create or replace function job_queue_resume(queue text)
  returns boolean
  language plpgsql
  security definer
  set search_path = pg_catalog, public
as $$
#variable_conflict use_column
begin
  delete from public.job_queue_pauses p where p.queue = job_queue_resume.queue;
  return found;
end;
$$;

revoke all on function job_queue_pause(text, text) from public;
revoke all on function job_queue_resume(text) from public;

do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on job_queue_pauses from anon;
    revoke all on function job_queue_pause(text, text) from anon;
    revoke all on function job_queue_resume(text) from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on job_queue_pauses from authenticated;
    revoke all on function job_queue_pause(text, text) from authenticated;
    revoke all on function job_queue_resume(text) from authenticated;
  end if;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on job_queue_pauses to service_role;
    grant execute on function job_queue_pause(text, text) to service_role;
    grant execute on function job_queue_resume(text) to service_role;
  end if;
end;
$$;
