-- The admin dashboard: its audit table, and the few indexes its pages need on a large table.
-- Written for PostgreSQL 14 through 18.

-- Who did what from the dashboard: one row per action (written in the same transaction as
-- the change), login, failed login and logout. `target` names what was acted on
-- ('job:42', 'schedule:nightly', 'queue:mail', 'dashboard'); `actor` is the dashboard user
-- (for a failed login: the name that was tried).
create table if not exists job_admin_audit (
  id          bigint generated always as identity primary key,
  at          timestamptz not null default now(),
  actor       text        not null,
  action      text        not null,
  target      text        not null,
  detail      jsonb,
  remote_addr text
);
-- The audit list reads `order by id desc` from the primary key; a job's or schedule's own
-- entries (who started this manual run?) come from this one.
create index if not exists job_admin_audit_target_idx on job_admin_audit (target, id);
alter table job_admin_audit enable row level security;

-- Job lists, newest first, are keyset scans of the primary key backwards. That is quick for
-- pending, running and succeeded jobs (recent ids, or most of the table) but would read a
-- million rows to find the few failed or cancelled ones, or the ones with an error to search.
-- Partial indexes on those rare states cost the common path nothing: a row version gets an
-- entry only when it is failed, cancelled or carries an error (a job being retried), never
-- on an enqueue, a first claim or a success.
create index if not exists job_queue_failed_idx on job_queue (id) where status = 'failed';
create index if not exists job_queue_cancelled_idx on job_queue (id) where status = 'cancelled';
create index if not exists job_queue_error_idx on job_queue (id) where last_error is not null;

-- The runs list filters on the rare outcomes and on manual runs the same way. job_runs is
-- insert-only: these add an index entry only to the rows they cover.
create index if not exists job_runs_problem_idx on job_runs (id) where status <> 'succeeded';
create index if not exists job_runs_manual_idx on job_runs (id) where run_type = 'manual';

do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on job_admin_audit from anon;
    revoke all on sequence job_admin_audit_id_seq from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on job_admin_audit from authenticated;
    revoke all on sequence job_admin_audit_id_seq from authenticated;
  end if;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on job_admin_audit to service_role;
    grant usage, select on sequence job_admin_audit_id_seq to service_role;
  end if;
end;
$$;
