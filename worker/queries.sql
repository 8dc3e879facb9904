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
-- finishing alone passes $16 = 0. (Two statements per cycle: bench/README.md.)
--
-- Finishing: each row is guarded by id, status = 'running' and the attempt number (the
-- lease token), so a worker that lost its lease changes nothing; `spend` = false gives
-- the attempt back (shutdown). $14 is this worker.
--
-- Claiming, from queues $15 (less the paused ones), the task types $17 this worker serves,
-- each with its handler's max_attempts ($19) and limits: at most $20 running fleet-wide,
-- at most $22 running per key (the job's concurrency_key, else its payload field $21), at
-- most $23 started in any $24 seconds. NULL: no such limit. Jobs are taken in priority,
-- run_at, id order, under lease $18 seconds.
--
-- What it costs never depends on rows it cannot take. It walks job_queue_ready_idx (queue,
-- task_type, priority, run_at, id) only for the pairs it may take from (`groups`), and
-- within each pair only the due rows of each priority present: `prios` finds the distinct
-- priorities with one index probe each, and each probe's range stops at the first row due
-- later. So rows of paused or other queues, unserved or held-back task types, and future
-- rows are never read. (test_claim_plans_never_read_what_they_cannot_take.)
--
-- Limits (schema/0010_flow_control.sql): `gate` locks the job_limits row of each limited
-- type with SKIP LOCKED and keeps the types whose row is still the version this
-- statement's snapshot saw (`fresh`): then no other claim of that type committed since the
-- snapshot, and the running jobs and starts it counts are all there are (finishes since
-- only lower them). Those types' rows get version + 1 when jobs are claimed. A type that
-- is held (held_until), locked by another claim or stale takes nothing this time.
--
-- Two phases: `cand` picks the jobs without locking (each group's head, the per-key and
-- per-type allowances applied by window functions), then `due` locks them: for a type
-- without limits, the same index range again with SKIP LOCKED, so a row another worker
-- holds is passed over for the next; for a limited type, exactly the chosen rows.
-- The locked rows are joined back by id, not ctid: a due row that another transaction
-- updated after this statement's snapshot (the dashboard's "run now") is locked in its new
-- version, which a ctid join cannot see; by id, the update follows it (EvalPlanQual).
--
-- Returns one row per claimed job (in claim order), then one row whose `written` holds the ids written
-- (one array, not a row per id: fewer rows to decode per cycle), `released`: the jobs
-- written final that children wait on (has_children; the caller releases them right after
-- this commit, schema/0014_workflows.sql), and `wake_at`: when a limited or held type may
-- take jobs again (null: nothing waits on a limit).
WITH RECURSIVE written AS (
  -- No join with the outcome rows: each job is found by id (`= ANY`) and takes its own
  -- values at its position in the arrays. A join let the planner rescan every outcome for
  -- every job, and a generic plan made while the table was small kept doing it: 0.5 s for
  -- 1,000 outcomes, ~5 ms of a 12 ms cycle at 100
  -- (test_a_large_outcome_batch_is_not_joined_row_by_row). The position is found by
  -- binary search, width_bucket over the ids, which the caller sorts: array_position
  -- walked the array, ~9 times a row, and a batch of 1,000 outcomes cost 1.4 times as
  -- much. Of equal ids (an outcome whose lease was lost beside the current attempt's, in
  -- the order they came) it takes the last, the current one
  -- (test_of_two_outcomes_of_one_job_in_a_batch_the_current_attempts_is_written).
  -- Element access in text arrays is still linear in the position. By id also keeps the
  -- planner from reading every row the running index still points at
  -- (test_writing_outcomes_reads_only_the_jobs_written).
  UPDATE job_queue j
     SET status = ($3::text[])[width_bucket(j.id, $1::bigint[])],
         attempts = CASE WHEN ($13::bool[])[width_bucket(j.id, $1::bigint[])]
                         THEN j.attempts ELSE j.attempts - 1 END,
         -- A retry is due after its delay; a job given back unstarted (`spend` false,
         -- shutdown) keeps its run_at, and with it its place in the queue.
         run_at = CASE WHEN ($3::text[])[width_bucket(j.id, $1::bigint[])] = 'pending'
                        AND ($13::bool[])[width_bucket(j.id, $1::bigint[])]
                       THEN now() + make_interval(
                              secs => ($4::float8[])[width_bucket(j.id, $1::bigint[])])
                       ELSE j.run_at END,
         last_error = ($5::text[])[width_bucket(j.id, $1::bigint[])],
         result = ($6::jsonb[])[width_bucket(j.id, $1::bigint[])],
         finished_at = CASE WHEN ($3::text[])[width_bucket(j.id, $1::bigint[])] = 'pending'
                            THEN NULL ELSE now() END,
         locked_by = NULL,
         lease_expires_at = NULL,
         updated_at = now()
   WHERE j.id = ANY ($1::bigint[])
     AND j.status = 'running'
     AND j.attempts = ($2::int[])[width_bucket(j.id, $1::bigint[])]
  RETURNING j.id, j.task_type, j.queue, j.run_type, j.requested_by, j.schedule_name,
            j.status, j.has_children, width_bucket(j.id, $1::bigint[]) AS i
), audited AS (
  INSERT INTO job_runs (job_id, job_key, queue, run_type, status, reason, attempt,
                        rows_affected, notes, error, user_id, worker_id, schedule_name,
                        started_at, finished_at, duration_ms)
  SELECT w.id, w.task_type, w.queue, w.run_type, ($7::text[])[w.i], ($8::text[])[w.i],
         ($2::int[])[w.i], ($9::bigint[])[w.i], ($10::text[])[w.i], ($5::text[])[w.i],
         w.requested_by, $14, w.schedule_name, ($11::timestamptz[])[w.i],
         ($11::timestamptz[])[w.i] + make_interval(secs => ($12::int[])[w.i] / 1000.0),
         ($12::int[])[w.i]
    FROM written w
  RETURNING job_id
), handler AS (
  SELECT *, (h.type_limit IS NOT NULL OR h.key_limit IS NOT NULL OR h.rate_n IS NOT NULL)
              AS limited,
            (h.type_limit IS NOT NULL OR h.key_limit IS NOT NULL) AS counted
    FROM unnest($17::text[], $19::int[], $20::int[], $21::text[], $22::int[], $23::int[],
                $24::float8[])
      AS h(task_type, max_attempts, type_limit, key_field, key_limit, rate_n, rate_s)
   WHERE $16 > 0
), limits AS (
  -- This statement's snapshot of the limit rows of the types it serves.
  SELECT l.task_type, l.version, l.held_until
    FROM job_limits l
   WHERE l.task_type = ANY ($17::text[]) AND $16 > 0
), gate AS (
  SELECT l.task_type, l.version
    FROM job_limits l
   WHERE l.task_type IN (SELECT task_type FROM handler WHERE limited)
     AND (l.held_until IS NULL OR l.held_until <= now())
     FOR UPDATE OF l SKIP LOCKED
), fresh AS (
  SELECT g.task_type FROM gate g JOIN limits s ON s.task_type = g.task_type
   WHERE s.version = g.version
), running AS (
  SELECT j.task_type, j.limit_key, count(*)::int AS jobs
    FROM job_queue j
   WHERE j.status = 'running'
     AND j.limit_key IS NOT NULL
     AND j.task_type IN (SELECT task_type FROM fresh)
   GROUP BY j.task_type, j.limit_key
), started AS (
  SELECT h.task_type, count(r.*)::int AS jobs, min(r.started_at) AS oldest
    FROM handler h
    JOIN job_rate_starts r ON r.task_type = h.task_type
   WHERE h.rate_n IS NOT NULL
     AND h.task_type IN (SELECT task_type FROM fresh)
     AND r.started_at > now() - make_interval(secs => h.rate_s)
   GROUP BY h.task_type
), allow AS (
  SELECT h.task_type, h.key_field, h.key_limit, h.counted,
         CASE WHEN l.held_until > now() THEN 0
              WHEN NOT h.limited THEN $16
              WHEN h.task_type NOT IN (SELECT task_type FROM fresh) THEN 0
              ELSE greatest(0, least(
                     $16,
                     h.type_limit - coalesce((SELECT sum(r.jobs) FROM running r
                                               WHERE r.task_type = h.task_type), 0),
                     h.rate_n - coalesce(s.jobs, 0)))
         END::int AS allowance
    FROM handler h
    LEFT JOIN limits l ON l.task_type = h.task_type
    LEFT JOIN started s ON s.task_type = h.task_type
), groups AS (
  SELECT q AS queue, a.task_type, a.allowance,
         -- a keyed type looks further, past the jobs of keys at their limit
         CASE WHEN a.key_limit IS NULL THEN a.allowance ELSE a.allowance * 4 + 100 END
           AS scan
    FROM unnest($15::text[]) AS q
   CROSS JOIN allow a
   WHERE a.allowance > 0
     AND NOT EXISTS (SELECT 1 FROM job_queue_pauses p WHERE p.queue = q)
), prios(queue, task_type, scan, priority) AS (
  SELECT g.queue, g.task_type, g.scan,
         (SELECT min(j.priority) FROM job_queue j
           WHERE j.status = 'pending' AND j.queue = g.queue AND j.task_type = g.task_type)
    FROM groups g
  UNION ALL
  SELECT p.queue, p.task_type, p.scan,
         (SELECT min(j.priority) FROM job_queue j
           WHERE j.status = 'pending' AND j.queue = p.queue AND j.task_type = p.task_type
             AND j.priority > p.priority)
    FROM prios p
   WHERE p.priority IS NOT NULL
), heads AS (
  SELECT c.*, a.key_limit, a.counted
    FROM prios p
    JOIN allow a ON a.task_type = p.task_type
   CROSS JOIN LATERAL (
     SELECT j.id, j.queue, j.task_type, j.priority, j.run_at,
            coalesce(j.concurrency_key, j.payload ->> a.key_field) AS key
       FROM job_queue j
      WHERE j.status = 'pending'
        AND j.queue = p.queue
        AND j.task_type = p.task_type
        AND j.priority = p.priority
        AND j.run_at <= now()
      ORDER BY j.run_at, j.id
      LIMIT p.scan) c
   WHERE p.priority IS NOT NULL
), keyed AS (
  SELECT h.*,
         row_number() OVER (PARTITION BY h.task_type, h.key
                            ORDER BY h.priority, h.run_at, h.id) AS key_rank
    FROM heads h
), typed AS (
  SELECT k.*,
         row_number() OVER (PARTITION BY k.task_type ORDER BY k.priority, k.run_at, k.id)
           AS type_rank
    FROM keyed k
   WHERE k.key_limit IS NULL
      OR k.key IS NULL
      OR k.key_rank <= k.key_limit - coalesce((SELECT r.jobs FROM running r
                                                WHERE r.task_type = k.task_type
                                                  AND r.limit_key = k.key), 0)
), cand AS (
  SELECT t.id, t.queue, t.task_type, t.priority, t.run_at, t.counted
    FROM typed t
    JOIN allow a ON a.task_type = t.task_type
   WHERE t.type_rank <= a.allowance
   ORDER BY t.priority, t.run_at, t.id
   LIMIT $16
), take AS (
  SELECT c.queue, c.task_type, c.priority, count(*) AS jobs
    FROM cand c
    JOIN handler h ON h.task_type = c.task_type
   WHERE NOT h.limited
   GROUP BY c.queue, c.task_type, c.priority
), due AS (
  SELECT d.id
    FROM take t
   CROSS JOIN LATERAL (
     SELECT j.id FROM job_queue j
      WHERE j.status = 'pending'
        AND j.queue = t.queue
        AND j.task_type = t.task_type
        AND j.priority = t.priority
        AND j.run_at <= now()
      ORDER BY j.run_at, j.id
      LIMIT t.jobs
        FOR UPDATE OF j SKIP LOCKED) d
  UNION ALL
  SELECT x.id
    FROM (SELECT j.id FROM job_queue j
           WHERE j.id IN (SELECT c.id FROM cand c JOIN handler h
                            ON h.task_type = c.task_type WHERE h.limited)
             AND j.status = 'pending'
             FOR UPDATE OF j SKIP LOCKED) x
), claimed AS (
  UPDATE job_queue j
     SET status = 'running',
         attempts = j.attempts + 1,
         max_attempts = coalesce(j.max_attempts, h.max_attempts),
         locked_by = $14,
         lease_expires_at = now() + make_interval(secs => $18),
         started_at = now(),
         limit_key = CASE WHEN h.counted
                          THEN coalesce(j.concurrency_key, j.payload ->> h.key_field, '')
                     END,
         updated_at = now()
    FROM handler h
   -- By primary key from the locked ids (an array, not a join): with statistics on a
   -- large table the planner estimated `due` at millions of rows and hash-joined it
   -- against a sequential scan of job_queue, 1.3-1.7 s a claim beside a million rows
   -- (test_claim_plans_never_read_what_they_cannot_take, analyzed).
   WHERE j.id = ANY (ARRAY(SELECT due.id FROM due))
     AND h.task_type = j.task_type
  RETURNING j.id, j.queue, j.task_type, j.payload, j.attempts, j.max_attempts, j.run_type,
            j.schedule_name, j.requested_by, j.created_at, j.priority, j.run_at,
            j.trace_context
), bumped AS (
  UPDATE job_limits l
     SET version = l.version + 1, updated_at = now()
   WHERE l.task_type IN (SELECT c.task_type FROM claimed c JOIN handler h
                          ON h.task_type = c.task_type WHERE h.limited)
  RETURNING l.task_type
), rated AS (
  INSERT INTO job_rate_starts (task_type, started_at)
  SELECT c.task_type, now()
    FROM claimed c
    JOIN handler h ON h.task_type = c.task_type
   WHERE h.rate_n IS NOT NULL
  RETURNING 1
)
SELECT * FROM (SELECT c.*, NULL::bigint[] AS written, NULL::bigint[] AS released,
                      NULL::timestamptz AS wake_at
                 FROM claimed c ORDER BY c.priority, c.run_at, c.id) claimed_in_order
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT array_agg(a.job_id) FROM audited a),
       (SELECT array_agg(w.id) FROM written w
         WHERE w.has_children AND w.status IN ('succeeded', 'failed', 'cancelled')),
       (SELECT min(w.at) FROM (
          SELECT l.held_until AS at FROM limits l WHERE l.held_until > now()
          UNION ALL
          SELECT s.oldest + make_interval(secs => h.rate_s)
            FROM started s JOIN handler h ON h.task_type = s.task_type
           WHERE s.jobs >= h.rate_n) w)
  FROM (SELECT count(*) FROM bumped) b, (SELECT count(*) FROM rated) r;

-- name: release_jobs
-- After a commit that made jobs $1 final: move their waiting children on (pending, or
-- cancelled with reason 'parent_failed'). Returns how many children moved.
SELECT job_queue_release($1::bigint[]) AS moved;

-- name: release_stranded
-- The sweep: up to $1 final jobs whose children were never released (a worker died between
-- its commit and the release). job_queue_unreleased_idx holds exactly those: cheap, and
-- usually empty.
SELECT count(*) AS jobs, job_queue_release(array_agg(s.id)) AS moved
  FROM (SELECT id FROM job_queue
         WHERE has_children AND status IN ('succeeded', 'failed', 'cancelled')
         ORDER BY id
         LIMIT $1) s;

-- name: parent_results
-- What a child reads of its parents ($1: the child): id, task type, status and result.
SELECT p.id, p.task_type, p.status, p.result
  FROM job_dependencies d
  JOIN job_queue p ON p.id = d.parent_id
 WHERE d.child_id = $1
 ORDER BY p.id;

-- name: enqueue_group
-- N children and a finalizer depending on all of them (on_parent_failure 'run'), in one
-- call: $1 the children (a JSON array of jobs), $2 the finalizer. Ids: children's, then
-- the finalizer's.
-- JSON as text: the same on a connection with or without a jsonb codec.
SELECT job_queue_enqueue_group($1::text::jsonb, $2::text::jsonb) AS ids;

-- name: extend_leases
-- The heartbeat: push out the leases of this worker's running jobs ($1 ids, $2 attempts)
-- in one statement. Returns the ids still ours; a missing id was rescued elsewhere.
UPDATE job_queue j
   SET lease_expires_at = now() + make_interval(secs => $4)
  FROM unnest($1::bigint[], $2::int[]) AS r(id, attempt)
 WHERE j.id = r.id
   AND j.id = ANY ($1::bigint[])  -- by id: see finish_and_claim's `written`
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
  DELETE FROM job_queue j USING doomed WHERE j.id = doomed.id RETURNING j.id
), edges AS (
  -- a job's dependency edges go with it (schema/0014_workflows.sql: no foreign keys)
  DELETE FROM job_dependencies d USING gone WHERE d.child_id = gone.id RETURNING 1
)
SELECT count(*) AS deleted FROM gone, (SELECT count(*) FROM edges) e;

-- name: prune_runs
-- Retention for the audit trail: up to $2 job_runs rows that started before $1 (found
-- through the BRIN index on started_at).
WITH doomed AS (
  SELECT id FROM job_runs WHERE started_at < $1 LIMIT $2
), gone AS (
  DELETE FROM job_runs r USING doomed WHERE r.id = doomed.id RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: prune_rate_starts
-- Starts older than any rate window (a day): up to $1 rows.
WITH doomed AS (
  SELECT ctid FROM job_rate_starts WHERE started_at < now() - interval '1 day' LIMIT $1
), gone AS (
  DELETE FROM job_rate_starts r USING doomed WHERE r.ctid = doomed.ctid RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: ensure_limit_rows
-- A job_limits row for each task type of $1 that has limits (a claim locks it).
INSERT INTO job_limits (task_type)
SELECT t FROM unnest($1::text[]) AS t
ON CONFLICT (task_type) DO NOTHING;

-- name: hold_task_type
-- No claim takes task type $1 for $2 seconds (a longer hold already set stands); $3 why.
INSERT INTO job_limits AS l (task_type, held_until, held_reason)
VALUES ($1, now() + make_interval(secs => $2), left($3, 500))
ON CONFLICT (task_type) DO UPDATE
   SET held_until = greatest(l.held_until, excluded.held_until),
       held_reason = excluded.held_reason,
       updated_at = now();

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
 GROUP BY queue
UNION ALL
SELECT queue, 'waiting', count(*), 0::float8
  FROM job_queue
 WHERE status = 'waiting'
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

