-- The control plane's SQL: what the CLI, the HTTP API and the dashboard read and change
-- (worker/admin). Loaded by worker/admin/store.py, which alone executes these; a test
-- PREPAREs each of them against the migrated schema. The engine's own statements are in
-- worker/queries.sql.
--
-- Reads run in one read-only transaction per page or call, bounded in time and planned per
-- call (read_settings). Lists are keyset-paged newest first ($n::bigint IS NULL OR id < $n)
-- and filtered by "$n IS NULL OR column = $n": with custom plans a filter's value is a
-- constant the planner can match against the partial indexes of schema/0005_dashboard.sql.
-- test_dashboard_routes.py checks each list's plan on a table of rows. Every change runs
-- in one transaction with its job_admin_audit row (AdminStore._change): the admin functions
-- write it themselves, naming the actor set by act_as.

-- == reads ==

-- name: read_settings
-- For the rest of the page's transaction: a time limit ($1, such as '10s'), and custom
-- plans (a generic plan of the optional filters below could not use a partial index).
SELECT set_config('statement_timeout', $1, true),
       set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: overview_counts
-- Exact counts of the states with a partial index (pending: the claim index), and the
-- table's size as the planner last measured it (-1: never analyzed). Succeeded jobs, most
-- of a large table, are counted exactly only while it is small (dashboard_succeeded_count).
SELECT (SELECT count(*) FROM job_queue WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM job_queue WHERE status = 'running') AS running,
       (SELECT count(*) FROM job_queue WHERE status = 'failed') AS failed,
       (SELECT count(*) FROM job_queue WHERE status = 'cancelled') AS cancelled,
       (SELECT count(*) FROM job_queue WHERE status = 'waiting') AS waiting,
       (SELECT c.reltuples::bigint FROM pg_class c
         WHERE c.oid = 'job_queue'::regclass) AS estimated_rows;

-- name: succeeded_count
-- A full scan: only for a small table (the overview shows an estimate otherwise).
SELECT count(*) AS jobs FROM job_queue WHERE status = 'succeeded';

-- name: live_breakdown
-- Pending, running, failed and waiting jobs by queue and task type, each branch read
-- through its partial index; for pending also the age of the oldest due job.
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
UNION ALL
SELECT queue, task_type, 'waiting', count(*), NULL
  FROM job_queue
 WHERE status = 'waiting'
 GROUP BY queue, task_type
 ORDER BY 1, 2, 3;

-- name: throughput
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

-- name: jobs
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

-- name: job_runs
-- A job's attempts, newest first (job_runs_job_idx).
SELECT id, status, reason, attempt, run_type, started_at, finished_at, duration_ms,
       worker_id, user_id, rows_affected, notes, error
  FROM job_runs
 WHERE job_id = $1
 ORDER BY id DESC
 LIMIT $2;

-- name: first_run
-- The first attempt of job $1 (a manual run's outcome), or nothing while it is unfinished.
SELECT id, status, reason, attempt, started_at, finished_at, rows_affected, notes, error
  FROM job_runs
 WHERE job_id = $1
 ORDER BY id
 LIMIT 1;

-- name: runs
-- The runs list: $1 status, $2 run type, $3 task type (job_key), $4 user, $5 keyset, $6
-- page size. For a manual run, who started it (the audit row of the enqueue, by target).
SELECT r.id, r.job_id, r.job_key, r.queue, r.run_type, r.status, r.reason, r.attempt,
       r.started_at, r.finished_at, r.duration_ms, r.rows_affected, r.user_id, r.worker_id,
       r.schedule_name, left(r.error, 160) AS error_excerpt, a.actor
  FROM job_runs r
  LEFT JOIN LATERAL (
    SELECT x.actor
      FROM job_admin_audit x
     WHERE r.run_type = 'manual'
       AND x.target = 'job:' || r.job_id
       AND x.action IN ('schedule_run_now', 'job_enqueue')
     ORDER BY x.id DESC
     LIMIT 1) a ON true
 WHERE ($1::text IS NULL OR r.status = $1)
   AND ($2::text IS NULL OR r.run_type = $2)
   AND ($3::text IS NULL OR r.job_key = $3)
   AND ($4::uuid IS NULL OR r.user_id = $4)
   AND ($5::bigint IS NULL OR r.id < $5)
 ORDER BY r.id DESC
 LIMIT $6;

-- name: audit_entries
-- Audit rows about one target ('job:42', 'schedule:x'), newest first; $2 rows.
SELECT id, at, actor, action, detail, remote_addr
  FROM job_admin_audit
 WHERE target = $1
 ORDER BY id DESC
 LIMIT $2;

-- name: recent_audit
SELECT id, at, actor, action, target, remote_addr
  FROM job_admin_audit
 ORDER BY id DESC
 LIMIT $1;

-- name: schedule
SELECT * FROM job_schedules WHERE name = $1;

-- name: schedule_jobs
-- A schedule's jobs, newest first (job_queue_schedule_idx): $2 keyset, $3 page size.
SELECT id, status, attempts, run_type, run_at, created_at, finished_at,
       left(last_error, 160) AS error_excerpt
  FROM job_queue
 WHERE schedule_name = $1
   AND ($2::bigint IS NULL OR id < $2)
 ORDER BY id DESC
 LIMIT $3;

-- name: schedule_last_tick
-- The newest job the scheduler enqueued for schedule $1 (job_queue_schedule_idx, newest
-- first), or none if it never ran. Its tick is in its dedupe key (scheduler.dedupe_key):
-- run_at is the tick only until a retry moves it. job_schedules.last_tick_at is not the
-- last tick: creating, re-timing or resuming a schedule moves it to that moment.
SELECT id, run_at, dedupe_key
  FROM job_queue
 WHERE schedule_name = $1 AND run_type = 'cron'
 ORDER BY id DESC
 LIMIT 1;

-- name: job
SELECT * FROM job_queue WHERE id = $1;

-- name: job_parents
-- The jobs job $1 depends on (schema/0014_workflows.sql), with their states.
SELECT p.id, p.task_type, p.status, p.finished_at
  FROM job_dependencies d
  JOIN job_queue p ON p.id = d.parent_id
 WHERE d.child_id = $1
 ORDER BY p.id;

-- name: job_children
-- Up to $2 jobs that depend on job $1 (through job_dependencies_parent_idx), with their
-- states.
SELECT c.id, c.task_type, c.status, c.finished_at
  FROM job_dependencies d
  JOIN job_queue c ON c.id = d.child_id
 WHERE d.parent_id = $1
 ORDER BY c.id
 LIMIT $2;

-- name: paused_queues
SELECT queue, paused_at, paused_by, reason FROM job_queue_pauses ORDER BY queue;

-- name: queues
-- Every queue that has live jobs or is paused: pending and running counts, the age of the
-- oldest due job, and the pause (each branch reads a partial index, as queue_metrics does).
WITH live AS (
  SELECT queue, 'pending' AS status, count(*) AS jobs,
         min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
    FROM job_queue
   WHERE status = 'pending'
   GROUP BY queue
  UNION ALL
  SELECT queue, 'running', count(*), NULL
    FROM job_queue
   WHERE status = 'running'
   GROUP BY queue
), names AS (
  SELECT queue FROM live
  UNION
  SELECT queue FROM job_queue_pauses
)
SELECT n.queue,
       coalesce(sum(l.jobs) FILTER (WHERE l.status = 'pending'), 0)::bigint AS pending,
       coalesce(sum(l.jobs) FILTER (WHERE l.status = 'running'), 0)::bigint AS running,
       extract(epoch FROM now() - min(l.oldest_due))::float8 AS oldest_due_age_s,
       p.queue IS NOT NULL AS paused, p.paused_at, p.paused_by, p.reason
  FROM names n
  LEFT JOIN live l ON l.queue = n.queue
  LEFT JOIN job_queue_pauses p ON p.queue = n.queue
 GROUP BY n.queue, p.queue, p.paused_at, p.paused_by, p.reason
 ORDER BY n.queue;

-- name: status_breakdown
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

-- name: list_schedules
SELECT * FROM job_schedules_list();

-- name: schedule_history
SELECT * FROM job_schedule_history($1, $2);

-- == changes (each with its audit row, in one transaction) ==

-- name: audit
INSERT INTO job_admin_audit (actor, action, target, detail, remote_addr)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: act_as
-- Who acts, for the audit row the admin functions write in this transaction: $1 actor, $2
-- remote address (schema/0009_app_admins.sql honours these for privileged callers only).
SELECT set_config('job_queue.actor', $1, true),
       set_config('job_queue.remote_addr', coalesce($2, ''), true);

-- name: retry_job
-- A failed or cancelled job back to pending, due now, with one more attempt (no row: not
-- in a state to retry, or a live job holds its dedupe key). The guarded changes of jobs are
-- SQL functions (schema/0009_app_admins.sql), shared with the apps' admin RPCs.
SELECT * FROM job_queue_retry($1);

-- name: cancel_job
-- Cancel a pending or running job; a running attempt is closed with a 'cancelled' job_runs
-- row naming the actor.
SELECT * FROM job_queue_cancel($1);

-- name: run_job_now
-- A pending job due now (it keeps its place among due jobs by priority).
SELECT * FROM job_queue_run_now($1);

-- name: run_schedule_now
-- One manual run of schedule $1, now (whatever its timing; paused or not), on behalf of
-- user $2 (null: not a signed-in user). No such schedule: P0002.
SELECT * FROM job_schedule_run_now($1, $2);

-- name: retime_schedule
SELECT * FROM job_schedule_retime($1, $2, $3);

-- name: enqueue
-- One job for an admin (CLI, API, dashboard): $8 run type ('manual' for a manual run), $9
-- who asked, $10 the caller's trace context. A live job holding dedupe key $7 wins:
-- nothing is inserted and that job is returned with created = false. (A conflicting job
-- committed after this statement's snapshot is not visible to the second branch: no row;
-- the caller asks again.)
WITH inserted AS (
  INSERT INTO job_queue (task_type, payload, run_at, queue, priority, max_attempts,
                         dedupe_key, run_type, requested_by, trace_context)
  VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7, $8, $9, $10)
  ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
  DO NOTHING
  RETURNING id, status
)
SELECT id, status, true AS created FROM inserted
UNION ALL
SELECT j.id, j.status, false
  FROM job_queue j
 WHERE j.dedupe_key = $7
   AND j.status IN ('pending', 'running')
   AND NOT EXISTS (SELECT 1 FROM inserted)
 LIMIT 1;

-- name: enqueue_with_parents
-- One job with parents ($7 ids, $8 on_parent_failure) through job_queue_enqueue, which
-- locks the parents and decides the job's state (waiting, pending or cancelled). A job
-- with parents has no dedupe key: always a new job.
SELECT job_queue_enqueue($1, $2, $3, $4, $5, $6, NULL, $7, $8, NULL, $9) AS id;

-- name: mark_enqueued
-- What job_queue_enqueue does not set: $2 run type, $3 who asked.
UPDATE job_queue SET run_type = $2, requested_by = $3
 WHERE id = $1
RETURNING id, status, true AS created;

-- name: release_children
-- After cancelling jobs $1 in this transaction: their waiting children follow (cancelled
-- with reason 'parent_failed', or pending if they run anyway and every parent is final).
SELECT job_queue_release($1::bigint[]) AS moved;

-- name: pause_queue
SELECT job_queue_pause($1, $2) AS changed;

-- name: resume_queue
SELECT job_queue_resume($1) AS changed;

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

-- == dashboard sessions ==

-- name: session_create
-- A new session ($1: SHA-256 of its id) for user $2 until $3; expired ones go first.
WITH expired AS (
  DELETE FROM job_dashboard_sessions WHERE expires_at < now() - interval '1 day'
)
INSERT INTO job_dashboard_sessions (id_sha256, user_name, expires_at, remote_addr)
VALUES ($1, $2, $3, $4);

-- name: session_user
-- The user of a live session (not revoked, not expired), or nothing.
SELECT user_name
  FROM job_dashboard_sessions
 WHERE id_sha256 = $1 AND revoked_at IS NULL AND expires_at > now();

-- name: session_revoke
UPDATE job_dashboard_sessions
   SET revoked_at = now()
 WHERE id_sha256 = $1 AND revoked_at IS NULL;


-- == bulk actions by filter (the dashboard's jobs list) ==
-- One state at a time ($1: failed, cancelled, pending or running), so that each count and
-- batch reads that state's partial index; $2 queue, $3 task type, $4 text in last_error (as
-- in `jobs`), $5 the highest id the operator's count covered (jobs enqueued since are
-- left alone). Each batch is its own short transaction with its audit row
-- (AdminStore.bulk_batch): $6 keyset (ids below it), $7 batch size. Rows locked by someone
-- else right now (a worker finishing them) are skipped, never waited for.

-- name: bulk_count
-- How many jobs in state $1 match the filter, and the highest id among them.
SELECT count(*) AS jobs, max(id) AS max_id
  FROM job_queue
 WHERE status = $1
   AND ($2::text IS NULL OR queue = $2)
   AND ($3::text IS NULL OR task_type = $3)
   AND ($4::text IS NULL
        OR (last_error IS NOT NULL AND strpos(lower(last_error), lower($4)) > 0))
   AND ($5::bigint IS NULL OR id <= $5);

-- name: bulk_retry
-- retry_job for up to $7 matching jobs (failed or cancelled): pending, due now, one more
-- attempt; a job whose dedupe key a live job holds is left as it is.
WITH picked AS (
  SELECT j.id
    FROM job_queue j
   WHERE j.status = $1
     AND j.status IN ('failed', 'cancelled')
     AND ($2::text IS NULL OR j.queue = $2)
     AND ($3::text IS NULL OR j.task_type = $3)
     AND ($4::text IS NULL
          OR (j.last_error IS NOT NULL AND strpos(lower(j.last_error), lower($4)) > 0))
     AND j.id <= $5
     AND ($6::bigint IS NULL OR j.id < $6)
     AND NOT EXISTS (SELECT 1 FROM job_queue d
                      WHERE d.dedupe_key = j.dedupe_key AND d.status IN ('pending', 'running'))
   ORDER BY j.id DESC
   LIMIT $7
     FOR UPDATE OF j SKIP LOCKED
), changed AS (
  UPDATE job_queue j
     SET status = 'pending',
         run_at = now(),
         max_attempts = greatest(coalesce(j.max_attempts, j.attempts), j.attempts + 1),
         finished_at = NULL,
         locked_by = NULL,
         lease_expires_at = NULL,
         updated_at = now()
    FROM picked
   WHERE j.id = picked.id
  RETURNING j.id
)
SELECT count(*) AS jobs, min(id) AS lowest_id, max(id) AS highest_id FROM changed;

-- name: bulk_cancel
-- cancel_job for up to $7 matching jobs (waiting, pending or running); a running attempt
-- is closed with a 'cancelled' job_runs row ($8: who). `parents`: the cancelled jobs that
-- children wait on (the caller releases them in the same transaction).
WITH picked AS (
  SELECT j.id, j.status, j.attempts, j.locked_by, j.started_at
    FROM job_queue j
   WHERE j.status = $1
     AND j.status IN ('waiting', 'pending', 'running')
     AND ($2::text IS NULL OR j.queue = $2)
     AND ($3::text IS NULL OR j.task_type = $3)
     AND ($4::text IS NULL
          OR (j.last_error IS NOT NULL AND strpos(lower(j.last_error), lower($4)) > 0))
     AND j.id <= $5
     AND ($6::bigint IS NULL OR j.id < $6)
   ORDER BY j.id DESC
   LIMIT $7
     FOR UPDATE OF j SKIP LOCKED
), cancelled AS (
  UPDATE job_queue j
     SET status = 'cancelled',
         finished_at = now(),
         locked_by = NULL,
         lease_expires_at = NULL,
         updated_at = now()
    FROM picked
   WHERE j.id = picked.id
  RETURNING j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name,
            j.has_children
), closed AS (
  INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt, error,
                        user_id, worker_id, schedule_name, started_at, finished_at,
                        duration_ms)
  SELECT c.id, c.task_type, c.queue, c.run_type, 'cancelled', 'cancelled_by_admin',
         p.attempts, 'cancelled by ' || $8, c.requested_by, p.locked_by,
         c.schedule_name, coalesce(p.started_at, now()), now(),
         least(greatest(0, extract(epoch FROM now() - coalesce(p.started_at, now())) * 1000),
               2147483647)::int
    FROM cancelled c
    JOIN picked p ON p.id = c.id
   WHERE p.status = 'running'
  RETURNING job_id
)
SELECT count(*) AS jobs, min(id) AS lowest_id, max(id) AS highest_id,
       (SELECT count(*) FROM closed) AS runs_closed,
       array_agg(id) FILTER (WHERE has_children) AS parents
  FROM cancelled;

-- name: bulk_delete
-- Delete up to $7 matching finished-for-good jobs (failed or cancelled) from job_queue;
-- their attempts stay in job_runs.
WITH picked AS (
  SELECT j.id
    FROM job_queue j
   WHERE j.status = $1
     AND j.status IN ('failed', 'cancelled')
     AND ($2::text IS NULL OR j.queue = $2)
     AND ($3::text IS NULL OR j.task_type = $3)
     AND ($4::text IS NULL
          OR (j.last_error IS NOT NULL AND strpos(lower(j.last_error), lower($4)) > 0))
     AND j.id <= $5
     AND ($6::bigint IS NULL OR j.id < $6)
   ORDER BY j.id DESC
   LIMIT $7
     FOR UPDATE OF j SKIP LOCKED
), deleted AS (
  DELETE FROM job_queue j
   USING picked
   WHERE j.id = picked.id
  RETURNING j.id
)
SELECT count(*) AS jobs, min(id) AS lowest_id, max(id) AS highest_id FROM deleted;

-- name: delete_job
-- One failed or cancelled job out of job_queue (its attempts stay in job_runs).
DELETE FROM job_queue
 WHERE id = $1 AND status IN ('failed', 'cancelled')
RETURNING id, status AS previous_status, task_type, queue;

-- == workers (schema/0011_workers.sql, written by worker/presence.py) ==

-- name: workers
-- Every worker row, live ones first; stale: silent for more than $1 of its own beats.
SELECT id, host, pid, version, started_at, last_seen_at, heartbeat_s, queues, concurrency,
       in_flight, running,
       extract(epoch FROM now() - last_seen_at)::float8 AS silent_s,
       extract(epoch FROM now() - started_at)::float8 AS up_s,
       last_seen_at < now() - make_interval(secs => heartbeat_s * $1) AS stale
  FROM job_workers
 ORDER BY stale, id;

-- == the jobs list at a million rows ==

-- name: job_id_range
-- The lowest and highest job ids (both ends of the primary key).
SELECT (SELECT min(id) FROM job_queue) AS lowest, (SELECT max(id) FROM job_queue) AS highest;

-- name: jobs_window
-- `jobs` within a window of ids: $7 the lowest id to look at. For filters no partial index
-- serves (queue, task type or error text on all states), a scan of the primary key stops
-- there instead of reading the whole table to find that nothing older matches; the page
-- then links to the next window.
SELECT id, queue, task_type, status, priority, attempts, max_attempts, run_type, run_at,
       created_at, finished_at, left(last_error, 160) AS error_excerpt
  FROM job_queue
 WHERE ($1::text IS NULL OR status = $1)
   AND ($2::text IS NULL OR queue = $2)
   AND ($3::text IS NULL OR task_type = $3)
   AND ($4::text IS NULL
        OR (last_error IS NOT NULL AND strpos(lower(last_error), lower($4)) > 0))
   AND ($5::bigint IS NULL OR id < $5)
   AND id >= $7
 ORDER BY id DESC
 LIMIT $6;
