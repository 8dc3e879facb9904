-- import-pg-cron (worker/admin/pgcron.py): read pg_cron's jobs, and move each convertible
-- one into job_schedules in one transaction. Nothing here runs a job's command.

-- name: pgcron_context
-- Where the import runs. cron.timezone is a real setting from pg_cron 1.5 on (before it,
-- pg_cron runs in GMT); pg_settings lists real settings only, never a session's placeholder
-- of that name, so `SET cron.timezone` on pg_cron 1.4 cannot fool the import.
SELECT current_database() AS database,
       current_user AS role,
       to_regclass('cron.job') IS NOT NULL AS has_pg_cron,
       to_regclass('public.job_schedules') IS NOT NULL AS has_schedules,
       to_regclass('vault.decrypted_secrets') IS NOT NULL AS has_vault,
       (SELECT setting FROM pg_settings WHERE name = 'cron.timezone') AS cron_timezone,
       (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database;

-- name: pgcron_jobs
-- Every job (or those of the ids in $1), oldest first.
SELECT jobid, jobname, schedule, command, database, username, active
  FROM cron.job
 WHERE $1::bigint[] IS NULL OR jobid = ANY ($1::bigint[])
 ORDER BY jobid;

-- name: pgcron_schedules
-- The schedules there already: a name that is taken, a task that already runs. The payload
-- as text keeps this independent of the connection's jsonb codec.
SELECT name, task_type, payload::text AS payload FROM job_schedules ORDER BY name;

-- name: pgcron_vault_secret
-- What the command's `(select decrypted_secret from vault.decrypted_secrets where name = 'x')`
-- reads; two rows would make that sub-select fail, so at most two are fetched.
SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1 LIMIT 2;

-- name: pgcron_function
-- The function a `select fn()` command calls ($1 is 'fn()' or 'schema.fn()'), as this
-- session resolves it; no row: there is none without arguments.
SELECT p.oid::regprocedure::text AS signature, p.prokind::text AS kind
  FROM pg_proc p
 WHERE p.oid = to_regprocedure($1);

-- name: pgcron_lock_job
-- The job as it is now, locked until the import's transaction ends (it must still be the
-- job that was planned).
SELECT jobid, jobname, schedule, command, database, username, active
  FROM cron.job
 WHERE jobid = $1
   FOR UPDATE;

-- name: pgcron_audited_here
-- This transaction writes its own audit row for the schedule it creates (pgcron_audit):
-- the admin function writes none.
SELECT set_config('job_queue.audited_by_caller', 'on', true);

-- name: pgcron_create_schedule
-- Through the admin function, so the same checks and trigger apply as for any schedule.
SELECT s.name, s.cron, s.timezone, s.task_type, s.queue, s.priority, s.max_attempts,
       s.missed, s.active
  FROM job_schedule_create(name => $1, cron => $2, task_type => $3,
                           payload => $4::text::jsonb, timezone => $5, queue => $6,
                           priority => $7, max_attempts => $8, active => $9) s;

-- name: pgcron_audit
-- The admin audit row of one import, in the same transaction (no payload, no command: a
-- command may hold a secret).
INSERT INTO job_admin_audit (actor, action, target, detail)
VALUES ($1, 'schedule_import_pg_cron', $2, $3::text::jsonb);

-- name: pgcron_unschedule
SELECT cron.unschedule($1::bigint);
