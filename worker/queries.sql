-- Every SQL statement the worker runs, by name. Loaded by worker/queries.py; executed only
-- by worker/store.py. A test PREPAREs each of them against the migrated schema.

-- name: create_migrations_table
-- `migration_set`: 'core' (schema/) or 'reference' (schema/reference/, the business tables
-- the bundled handlers use, applied only on request).
CREATE TABLE IF NOT EXISTS worker_migrations (
  migration_set text        NOT NULL DEFAULT 'core',
  version       integer     NOT NULL,
  name          text        NOT NULL,
  checksum      text        NOT NULL,
  applied_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (migration_set, version)
);

-- name: lock_migrations
-- Serialise concurrent `migrate` runs for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtextextended('worker.migrate', 0));

-- name: migration_owner
-- Who owns the schema (job_queue's owner), and whether this role may act as that owner.
-- No row before the first migration. Migrations alter objects only their owner may alter,
-- and create objects the owner must own; PostgreSQL 14 lets every role create in `public`,
-- so a permission error alone does not stop a role such as job_worker from migrating.
SELECT pg_get_userbyid(c.relowner) AS owner,
       pg_has_role(current_user, c.relowner, 'USAGE') AS may_act_as_owner
  FROM pg_class c
 WHERE c.oid = to_regclass('job_queue');

-- name: applied_migrations
SELECT version, name, checksum FROM worker_migrations WHERE migration_set = $1 ORDER BY version;

-- name: record_migration
INSERT INTO worker_migrations (migration_set, version, name, checksum) VALUES ($1, $2, $3, $4);

-- name: server_version
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version;

-- name: finish_and_claim
-- One statement, one round trip and one commit per cycle of the dispatcher: write a batch
-- of attempt outcomes ($1..$13, one array per column) with their job_runs rows, and claim
-- up to $16 due jobs. Either half may be empty: claiming alone passes empty arrays,
-- finishing alone passes $16 = 0. (Measured: two statements per cycle left the 2-core
-- reference machine at ~12k jobs/s; see bench/README.md.)
--
-- Finishing: each row is guarded by id, status = 'running' and the attempt number (the
-- lease token), so a worker that lost its lease changes nothing; `spend` = false gives
-- the attempt back (shutdown). $14 is this worker.
--
-- Claiming: lock due jobs of queues $15 whose task types ($17) this worker serves, mark
-- them running under lease $18 seconds, and fill in each handler's max_attempts ($19,
-- parallel to $17) where the row left it null. Paused queues are removed from $15 once, in
-- an initplan: a per-row NOT EXISTS made the planner expect one row and sort every pending
-- row instead of walking job_queue_claim_idx (13 ms instead of 0.05 ms per claim;
-- test_claim_plan_walks_the_index). All CTEs share one snapshot, so a job this statement
-- sends back to pending is not claimed again by the same statement.
--
-- The claim joins its locked rows back by id, not ctid: a due row that another transaction
-- updated after this statement's snapshot (the dashboard's "run now") is locked in its new
-- version, which a ctid join cannot see; by id, the update follows it (EvalPlanQual).
--
-- Returns one row per claimed job, then one row whose `written` holds the ids written
-- (one array, not a row per id: fewer rows to decode per cycle).
WITH outcome AS (
  SELECT *
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::text[], $6::jsonb[],
                $7::text[], $8::text[], $9::bigint[], $10::text[], $11::timestamptz[],
                $12::int[], $13::bool[])
      AS o(id, attempt, job_status, retry_delay_s, error, result, run_status, reason,
           rows_affected, notes, started_at, duration_ms, spend)
), written AS (
  UPDATE job_queue j
     SET status = o.job_status,
         attempts = CASE WHEN o.spend THEN j.attempts ELSE j.attempts - 1 END,
         run_at = CASE WHEN o.job_status = 'pending'
                       THEN now() + make_interval(secs => o.retry_delay_s)
                       ELSE j.run_at END,
         last_error = o.error,
         result = o.result,
         finished_at = CASE WHEN o.job_status = 'pending' THEN NULL ELSE now() END,
         locked_by = NULL,
         lease_expires_at = NULL,
         updated_at = now()
    FROM outcome o
   WHERE j.id = o.id
     AND j.status = 'running'
     AND j.attempts = o.attempt
  RETURNING j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name
), audited AS (
  INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt,
                        rows_affected, notes, error, user_id, worker_id, schedule_name,
                        started_at, finished_at, duration_ms)
  SELECT w.id, w.task_type, w.queue, w.run_type, o.run_status, o.reason, o.attempt,
         o.rows_affected, o.notes, o.error, w.requested_by, $14, w.schedule_name,
         o.started_at, o.started_at + make_interval(secs => o.duration_ms / 1000.0),
         o.duration_ms
    FROM written w
    JOIN outcome o ON o.id = w.id
  RETURNING job_id
), due AS (
  SELECT j.id
    FROM job_queue j
   WHERE j.status = 'pending'
     AND j.queue = ANY (ARRAY(SELECT q FROM unnest($15::text[]) AS q
                               WHERE NOT EXISTS (SELECT 1 FROM job_queue_pauses p
                                                  WHERE p.queue = q)))
     AND j.run_at <= now()
     AND j.task_type = ANY($17::text[])
   ORDER BY j.priority, j.run_at, j.id
   LIMIT $16
   FOR UPDATE SKIP LOCKED
), handler AS (
  SELECT * FROM unnest($17::text[], $19::int[]) AS h(task_type, max_attempts)
), claimed AS (
  UPDATE job_queue j
     SET status = 'running',
         attempts = j.attempts + 1,
         max_attempts = coalesce(j.max_attempts, handler.max_attempts),
         locked_by = $14,
         lease_expires_at = now() + make_interval(secs => $18),
         started_at = now(),
         updated_at = now()
    FROM due, handler
   WHERE j.id = due.id
     AND handler.task_type = j.task_type
  RETURNING j.id, j.queue, j.task_type, j.payload, j.attempts, j.max_attempts, j.run_type,
            j.schedule_name, j.requested_by, j.created_at
)
SELECT c.*, NULL::bigint[] AS written FROM claimed c
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, array_agg(a.job_id)
  FROM audited a;

-- name: extend_leases
-- The heartbeat: push out the leases of this worker's running jobs ($1 ids, $2 attempts)
-- in one statement. Returns the ids still ours; a missing id was rescued elsewhere.
UPDATE job_queue j
   SET lease_expires_at = now() + make_interval(secs => $4)
  FROM unnest($1::bigint[], $2::int[]) AS r(id, attempt)
 WHERE j.id = r.id
   AND j.status = 'running'
   AND j.attempts = r.attempt
   AND j.locked_by = $3
RETURNING j.id;

-- name: rescue_expired
-- Return up to $1 running jobs whose lease expired (their worker died or hung) to pending
-- after a backoff of $2 * 2^(attempts-1) seconds capped at $3, or to failed when out of
-- attempts, with one job_runs row each (worker_id: the worker that lost the job; $4: the
-- rescuer). SKIP LOCKED: rescuers on several workers rescue each job once. The expired
-- attempt counts, so a job that crashes its worker every time ends failed.
WITH expired AS (
  SELECT j.id, j.locked_by, j.started_at, j.attempts >= coalesce(j.max_attempts, 1) AS exhausted
    FROM job_queue j
   WHERE j.status = 'running'
     AND j.lease_expires_at < now()
   ORDER BY j.id
   LIMIT $1
   FOR UPDATE SKIP LOCKED
), rescued AS (
  UPDATE job_queue j
     SET status = CASE WHEN e.exhausted THEN 'failed' ELSE 'pending' END,
         run_at = CASE WHEN e.exhausted THEN j.run_at
                       ELSE now() + make_interval(secs => least($3::float8,
                                      $2::float8 * power(2, greatest(j.attempts - 1, 0)))) END,
         finished_at = CASE WHEN e.exhausted THEN now() END,
         last_error = 'lease expired: worker ' || coalesce(e.locked_by, '?')
                      || ' stopped before finishing attempt ' || j.attempts
                      || ' (rescued by ' || $4 || ')',
         locked_by = NULL,
         lease_expires_at = NULL,
         updated_at = now()
    FROM expired e
   WHERE j.id = e.id
  RETURNING j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name,
            j.attempts, j.last_error
)
INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt, error,
                      user_id, worker_id, schedule_name, started_at, finished_at, duration_ms)
SELECT r.id, r.task_type, r.queue, r.run_type,
       CASE WHEN e.exhausted THEN 'failed' ELSE 'rescued' END,
       'lease_expired', r.attempts, r.last_error, r.requested_by, e.locked_by, r.schedule_name,
       coalesce(e.started_at, now()), now(),
       least(greatest(0, extract(epoch FROM now() - coalesce(e.started_at, now())) * 1000),
             2147483647)::int
  FROM rescued r
  JOIN expired e ON e.id = r.id
RETURNING job_id, status, job_key AS task_type, queue, attempt, error;

-- name: paused_queues
SELECT queue, paused_at, paused_by, reason FROM job_queue_pauses ORDER BY queue;

-- name: pause_queue
SELECT job_queue_pause($1, $2) AS changed;

-- name: resume_queue
SELECT job_queue_resume($1) AS changed;

-- name: prune_jobs
-- Retention: delete up to $3 succeeded or cancelled jobs finished before $1, and failed
-- jobs finished before $2 (NULL: keep failed jobs). created_at < cutoff lets the BRIN
-- index skip recent pages; SKIP LOCKED keeps concurrent pruners from waiting on each other.
WITH doomed AS (
  SELECT id
    FROM job_queue
   WHERE created_at < greatest($1::timestamptz, coalesce($2::timestamptz, $1::timestamptz))
     AND ((status IN ('succeeded', 'cancelled') AND finished_at < $1)
          OR (status = 'failed' AND finished_at < $2))
   LIMIT $3
   FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM job_queue j USING doomed WHERE j.id = doomed.id RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: prune_runs
-- Retention for the audit trail: up to $2 job_runs rows that started before $1 (found
-- through the BRIN index on started_at).
WITH doomed AS (
  SELECT id FROM job_runs WHERE started_at < $1 LIMIT $2
), gone AS (
  DELETE FROM job_runs r USING doomed WHERE r.id = doomed.id RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: enqueue_job
-- The CLI's enqueue. A live job with the same dedupe key wins: nothing is inserted and its
-- id is not returned (the caller reports the duplicate).
INSERT INTO job_queue (task_type, payload, run_at, queue, priority, max_attempts,
                       dedupe_key, run_type, requested_by)
VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7, $8, $9)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
DO NOTHING
RETURNING id;

-- name: enqueue_many
-- Bulk enqueue of one task type (demo seeding, benchmarks): one row per payload.
INSERT INTO job_queue (task_type, payload, queue)
SELECT $1, p, $3 FROM unnest($2::jsonb[]) AS p
RETURNING id;

-- name: get_job
SELECT * FROM job_queue WHERE id = $1;

-- name: status_counts
SELECT queue, task_type, status, count(*) AS jobs
  FROM job_queue
 GROUP BY queue, task_type, status
 ORDER BY queue, task_type, status;

-- name: oldest_pending
-- Age in seconds of the oldest due pending job per queue.
SELECT queue, extract(epoch FROM now() - min(run_at))::float8 AS age_s, count(*) AS due
  FROM job_queue
 WHERE status = 'pending' AND run_at <= now()
 GROUP BY queue
 ORDER BY queue;

-- name: pending_task_types
SELECT task_type, count(*) AS jobs
  FROM job_queue
 WHERE status = 'pending'
 GROUP BY task_type
 ORDER BY task_type;

-- name: ping
SELECT 1;

-- == observability ==

-- name: queue_metrics
-- /metrics, at scrape time: live jobs per queue and status, and per queue the age in
-- seconds of the oldest due pending job (0 when none is due). Each branch repeats a
-- partial index's predicate, so finished history, most of the table, is never read.
SELECT queue, 'pending' AS status, count(*) AS jobs,
       coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())),
                0)::float8 AS oldest_due_age_s
  FROM job_queue
 WHERE status = 'pending'
 GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*), 0::float8
  FROM job_queue
 WHERE status = 'running'
 GROUP BY queue;

-- == scheduler ==

-- name: database_now
-- The database's clock: the scheduler compares it with its host's before each pass.
SELECT clock_timestamp() AS now;

-- name: due_schedules
-- Active schedules whose next tick has come by $1 (the scheduler's now), or whose next
-- tick is not computed yet (new, re-timed or resumed).
SELECT name, cron, timezone, missed, revision, last_tick_at, created_at
  FROM job_schedules
 WHERE active AND (next_tick_at IS NULL OR next_tick_at <= $1)
 ORDER BY name;

-- name: next_schedule_due
SELECT min(next_tick_at) AS next_due_at FROM job_schedules WHERE active;

-- name: fire_schedule
-- Exactly once: move schedule $1's last_tick_at from $3 (the value the pass read) to $4
-- and its next_tick_at to $5, only if nobody moved it meanwhile and its definition is still
-- revision $2; and, in the same statement, insert one cron job per tick ($6, with dedupe
-- keys $7). A replica that lost the race gets claimed = 0 and inserts nothing.
-- last_tick_at never moves backwards, so no tick is ever crossed twice.
WITH claimed AS (
  UPDATE job_schedules s
     SET last_tick_at = $4, next_tick_at = $5
   WHERE s.name = $1
     AND s.revision = $2
     AND s.active
     AND s.last_tick_at IS NOT DISTINCT FROM $3::timestamptz
     AND $4::timestamptz >= coalesce(s.last_tick_at, '-infinity')
  RETURNING s.name, s.task_type, s.payload, s.queue, s.priority, s.max_attempts
), enqueued AS (
  INSERT INTO job_queue (task_type, payload, queue, priority, max_attempts, run_at,
                         dedupe_key, run_type, schedule_name)
  SELECT c.task_type, c.payload, c.queue, c.priority, c.max_attempts, t.tick, t.dedupe_key,
         'cron', c.name
    FROM claimed c
   CROSS JOIN unnest($6::timestamptz[], $7::text[]) AS t(tick, dedupe_key)
  ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
  DO NOTHING
  RETURNING id, run_at
)
SELECT (SELECT count(*) FROM claimed) AS claimed,
       coalesce((SELECT array_agg(id ORDER BY run_at) FROM enqueued), '{}') AS job_ids,
       coalesce((SELECT array_agg(run_at ORDER BY run_at) FROM enqueued), '{}') AS ticks;

-- name: lock_schedule_sync
-- Serialise the file sync of replicas starting at once, for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtextextended('worker.schedules.sync', 0));

-- name: upsert_file_schedules
-- The schedule file's schedules, one array per column. The file owns their definition;
-- it may pause a schedule (active = false) and lift its own pause, but an admin's pause
-- stands. The job_schedules_guard trigger checks each row and bumps revisions.
INSERT INTO job_schedules AS s (name, cron, timezone, task_type, payload, queue, priority,
                                max_attempts, missed, active, paused_by, source)
SELECT d.name, d.cron, d.timezone, d.task_type, d.payload, d.queue, d.priority,
       d.max_attempts, d.missed, d.active, CASE WHEN d.active THEN NULL ELSE 'file' END,
       'file'
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[],
              $7::int[], $8::int[], $9::text[], $10::bool[])
    AS d(name, cron, timezone, task_type, payload, queue, priority, max_attempts, missed,
         active)
ON CONFLICT (name) DO UPDATE
   SET cron = excluded.cron,
       timezone = excluded.timezone,
       task_type = excluded.task_type,
       payload = excluded.payload,
       queue = excluded.queue,
       priority = excluded.priority,
       max_attempts = excluded.max_attempts,
       missed = excluded.missed,
       source = 'file',
       active = CASE WHEN NOT excluded.active THEN false
                     WHEN s.paused_by = 'file' THEN true
                     ELSE s.active END,
       paused_by = CASE WHEN NOT excluded.active THEN coalesce(s.paused_by, 'file')
                        WHEN s.paused_by = 'file' THEN NULL
                        ELSE s.paused_by END
RETURNING s.name, (s.xmax = 0) AS created, s.active, s.paused_by;

-- name: remove_file_schedules
-- Schedules the file declared once and no longer does ($1: the names it declares now).
DELETE FROM job_schedules
 WHERE source = 'file' AND NOT (name = ANY($1::text[]))
RETURNING name;

-- name: create_schedule
SELECT * FROM job_schedule_create(name => $1, cron => $2, task_type => $3, payload => $4,
                                  timezone => $5, queue => $6, priority => $7,
                                  max_attempts => $8, missed => $9, active => $10);

-- name: update_schedule
-- Null arguments leave a field as it is.
SELECT * FROM job_schedule_update(name => $1, cron => $2, timezone => $3, task_type => $4,
                                  payload => $5, queue => $6, priority => $7,
                                  max_attempts => $8, missed => $9);

-- name: toggle_schedule
SELECT * FROM job_schedule_toggle($1, $2);

-- name: delete_schedule
SELECT job_schedule_delete($1) AS deleted;

-- name: list_schedules
SELECT * FROM job_schedules_list();

-- name: schedule_history
SELECT * FROM job_schedule_history($1, $2);

-- == dashboard ==
-- The admin pages (worker/dashboard). Lists are keyset-paged newest first ($n::bigint IS
-- NULL OR id < $n) and filtered by "$n IS NULL OR column = $n": each page reads in one
-- read-only transaction planned per call (dashboard_read_settings), so a filter's value is
-- a constant the planner can match against the partial indexes of schema/0005_dashboard.sql.
-- test_dashboard_routes.py checks each list's plan on a table of rows.

-- name: dashboard_read_settings
-- For the rest of the page's transaction: a time limit ($1, such as '10s'), and custom
-- plans (a generic plan of the optional filters below could not use a partial index).
SELECT set_config('statement_timeout', $1, true),
       set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: dashboard_status_counts
-- Exact counts of the states with a partial index (pending: the claim index), and the
-- table's size as the planner last measured it (-1: never analyzed). Succeeded jobs, most
-- of a large table, are counted exactly only while it is small (dashboard_succeeded_count).
SELECT (SELECT count(*) FROM job_queue WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM job_queue WHERE status = 'running') AS running,
       (SELECT count(*) FROM job_queue WHERE status = 'failed') AS failed,
       (SELECT count(*) FROM job_queue WHERE status = 'cancelled') AS cancelled,
       (SELECT c.reltuples::bigint FROM pg_class c
         WHERE c.oid = 'job_queue'::regclass) AS estimated_rows;

-- name: dashboard_succeeded_count
-- A full scan: only for a small table (the overview shows an estimate otherwise).
SELECT count(*) AS jobs FROM job_queue WHERE status = 'succeeded';

-- name: dashboard_live_breakdown
-- Pending, running and failed jobs by queue and task type, each branch read through its
-- partial index; for pending also the age of the oldest due job.
SELECT queue, task_type, 'pending' AS status, count(*) AS jobs,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8
         AS oldest_due_age_s
  FROM job_queue
 WHERE status = 'pending'
 GROUP BY queue, task_type
UNION ALL
SELECT queue, task_type, 'running', count(*), NULL
  FROM job_queue
 WHERE status = 'running'
 GROUP BY queue, task_type
UNION ALL
SELECT queue, task_type, 'failed', count(*), NULL
  FROM job_queue
 WHERE status = 'failed'
 GROUP BY queue, task_type
 ORDER BY 1, 2, 3;

-- name: dashboard_throughput
-- Finished attempts since $1 in buckets of $2 ('minute' or 'hour', UTC): succeeded, and
-- failed (failed for good, retried or rescued). job_runs rows are written when an attempt
-- ends, so every row is a finished run; the BRIN index on started_at finds the recent pages.
SELECT date_trunc($2, started_at, 'UTC') AS bucket,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status IN ('failed', 'retry', 'rescued')) AS failed
  FROM job_runs
 WHERE started_at >= $1
 GROUP BY 1
 ORDER BY 1;

-- name: dashboard_jobs
-- The job list: $1 status, $2 queue, $3 task type, $4 text in last_error (case-insensitive,
-- not a pattern), $5 keyset (ids below it), $6 page size.
SELECT id, queue, task_type, status, priority, attempts, max_attempts, run_type, run_at,
       created_at, finished_at, left(last_error, 160) AS error_excerpt
  FROM job_queue
 WHERE ($1::text IS NULL OR status = $1)
   AND ($2::text IS NULL OR queue = $2)
   AND ($3::text IS NULL OR task_type = $3)
   AND ($4::text IS NULL
        OR (last_error IS NOT NULL AND strpos(lower(last_error), lower($4)) > 0))
   AND ($5::bigint IS NULL OR id < $5)
 ORDER BY id DESC
 LIMIT $6;

-- name: dashboard_job_runs
-- A job's attempts, newest first (job_runs_job_idx).
SELECT id, status, reason, attempt, run_type, started_at, finished_at, duration_ms,
       worker_id, user_id, rows_affected, notes, error
  FROM job_runs
 WHERE job_id = $1
 ORDER BY id DESC
 LIMIT $2;

-- name: dashboard_runs
-- The runs list: $1 status, $2 run type, $3 keyset, $4 page size. For a manual run, the
-- dashboard user who started it (its audit row, by target).
SELECT r.id, r.job_id, r.job_key, r.queue, r.run_type, r.status, r.reason, r.attempt,
       r.started_at, r.duration_ms, r.user_id, r.worker_id, r.schedule_name,
       left(r.error, 160) AS error_excerpt, a.actor
  FROM job_runs r
  LEFT JOIN LATERAL (
    SELECT x.actor
      FROM job_admin_audit x
     WHERE r.run_type = 'manual'
       AND x.target = 'job:' || r.job_id
       AND x.action = 'schedule_run_now'
     ORDER BY x.id DESC
     LIMIT 1) a ON true
 WHERE ($1::text IS NULL OR r.status = $1)
   AND ($2::text IS NULL OR r.run_type = $2)
   AND ($3::bigint IS NULL OR r.id < $3)
 ORDER BY r.id DESC
 LIMIT $4;

-- name: dashboard_audit_entries
-- Audit rows about one target ('job:42', 'schedule:x'), newest first; $2 rows.
SELECT id, at, actor, action, detail, remote_addr
  FROM job_admin_audit
 WHERE target = $1
 ORDER BY id DESC
 LIMIT $2;

-- name: dashboard_recent_audit
SELECT id, at, actor, action, target, remote_addr
  FROM job_admin_audit
 ORDER BY id DESC
 LIMIT $1;

-- name: dashboard_schedule
SELECT * FROM job_schedules WHERE name = $1;

-- name: dashboard_schedule_jobs
-- A schedule's jobs, newest first (job_queue_schedule_idx): $2 keyset, $3 page size.
SELECT id, status, attempts, run_type, run_at, created_at, finished_at,
       left(last_error, 160) AS error_excerpt
  FROM job_queue
 WHERE schedule_name = $1
   AND ($2::bigint IS NULL OR id < $2)
 ORDER BY id DESC
 LIMIT $3;

-- name: dashboard_schedule_last_tick
-- The newest job the scheduler enqueued for schedule $1 (job_queue_schedule_idx, newest
-- first), or none if it never ran. Its tick is in its dedupe key (scheduler.dedupe_key):
-- run_at is the tick only until a retry moves it. job_schedules.last_tick_at is not the
-- last tick: creating, re-timing or resuming a schedule moves it to that moment.
SELECT id, run_at, dedupe_key
  FROM job_queue
 WHERE schedule_name = $1 AND run_type = 'cron'
 ORDER BY id DESC
 LIMIT 1;

-- name: dashboard_audit
INSERT INTO job_admin_audit (actor, action, target, detail, remote_addr)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: dashboard_retry_job
-- A failed or cancelled job back to pending, due now, with one more attempt than it has
-- used (so attempt numbers in job_runs stay unique); last_error stays for the record. A
-- live job holding the same dedupe key wins: nothing changes.
WITH old AS (
  SELECT j.id, j.status
    FROM job_queue j
   WHERE j.id = $1
     AND j.status IN ('failed', 'cancelled')
     AND NOT EXISTS (SELECT 1 FROM job_queue d
                      WHERE d.dedupe_key = j.dedupe_key AND d.status IN ('pending', 'running'))
     FOR UPDATE OF j
)
UPDATE job_queue j
   SET status = 'pending',
       run_at = now(),
       max_attempts = greatest(coalesce(j.max_attempts, j.attempts), j.attempts + 1),
       finished_at = NULL,
       locked_by = NULL,
       lease_expires_at = NULL,
       updated_at = now()
  FROM old
 WHERE j.id = old.id
RETURNING j.id, old.status AS previous_status, j.attempts, j.max_attempts;

-- name: dashboard_cancel_job
-- Cancel a pending or running job. A running attempt is closed with a 'cancelled' job_runs
-- row ($2: who); its worker's own outcome is then discarded by finish_and_claim's guard
-- (status = 'running'), and its heartbeat stops the handler (extend_leases finds the row
-- no longer running).
WITH old AS (
  SELECT id, status, attempts, locked_by, started_at
    FROM job_queue
   WHERE id = $1 AND status IN ('pending', 'running')
     FOR UPDATE
), cancelled AS (
  UPDATE job_queue j
     SET status = 'cancelled',
         finished_at = now(),
         locked_by = NULL,
         lease_expires_at = NULL,
         updated_at = now()
    FROM old
   WHERE j.id = old.id
  RETURNING j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name
), closed AS (
  INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt, error,
                        user_id, worker_id, schedule_name, started_at, finished_at,
                        duration_ms)
  SELECT c.id, c.task_type, c.queue, c.run_type, 'cancelled', 'cancelled_by_admin',
         o.attempts, 'cancelled from the dashboard by ' || $2, c.requested_by, o.locked_by,
         c.schedule_name, coalesce(o.started_at, now()), now(),
         least(greatest(0, extract(epoch FROM now() - coalesce(o.started_at, now())) * 1000),
               2147483647)::int
    FROM cancelled c
    JOIN old o ON o.id = c.id
   WHERE o.status = 'running'
  RETURNING job_id
)
SELECT c.id, o.status AS previous_status, (SELECT count(*) FROM closed) AS runs_closed
  FROM cancelled c
  JOIN old o ON o.id = c.id;

-- name: dashboard_run_job_now
-- A pending job due now (it keeps its place among due jobs by priority).
WITH old AS (
  SELECT id, run_at FROM job_queue WHERE id = $1 AND status = 'pending' FOR UPDATE
)
UPDATE job_queue j
   SET run_at = least(j.run_at, now()), updated_at = now()
  FROM old
 WHERE j.id = old.id
RETURNING j.id, old.run_at AS previous_run_at;

-- name: dashboard_run_schedule_now
-- One manual run of a schedule, now (whatever its timing; paused or not).
INSERT INTO job_queue (task_type, payload, queue, priority, max_attempts, run_type,
                       schedule_name)
SELECT s.task_type, s.payload, s.queue, s.priority, s.max_attempts, 'manual', s.name
  FROM job_schedules s
 WHERE s.name = $1
RETURNING id, schedule_name;

-- name: dashboard_retime_schedule
SELECT * FROM job_schedule_retime($1, $2, $3);
