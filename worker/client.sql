-- The producer side (worker/client.py): jobs written on the caller's own connection, inside
-- the caller's transaction. Parameters are typed by their casts, so the statements need no
-- codec the caller's connection may lack (payloads travel as text and become jsonb here).
-- The job_queue_notify trigger (one NOTIFY per INSERT statement) wakes idle workers when
-- the caller commits.

-- name: enqueue
-- One job. A live (pending or running) job holding dedupe key $7 wins: nothing is inserted
-- and that job is returned with duplicate = true. (A conflicting job committed after this
-- statement's snapshot is in neither branch: no row; the client asks once more.)
WITH inserted AS (
  INSERT INTO job_queue (task_type, payload, run_at, queue, priority, max_attempts,
                         dedupe_key, requested_by, concurrency_key, trace_context)
  VALUES ($1::text, $2::text::jsonb, coalesce($3::timestamptz, now()), $4::text,
          $5::integer, $6::integer, $7::text, $8::uuid, $9::text, $10::text::jsonb)
  ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
  DO NOTHING
  RETURNING id, status
)
SELECT id, status, false AS duplicate FROM inserted
UNION ALL
SELECT j.id, j.status, true
  FROM job_queue j
 WHERE $7::text IS NOT NULL
   AND j.dedupe_key = $7::text
   AND j.status IN ('pending', 'running')
   AND NOT EXISTS (SELECT 1 FROM inserted)
 LIMIT 1;

-- name: enqueue_after
-- One job that waits for its parents ($9 depends_on, $10 on_parent_failure), through
-- job_queue_enqueue, which locks the parents and decides waiting, pending or cancelled
-- (schema/0014_workflows.sql). Returns its id; job_status then reads what was decided
-- (this statement's snapshot cannot see the row the function wrote).
SELECT job_queue_enqueue(
         task_type => $1::text, payload => $2::text::jsonb, run_at => $3::timestamptz,
         queue => $4::text, priority => $5::integer, max_attempts => $6::integer,
         depends_on => $9::bigint[], on_parent_failure => $10::text,
         concurrency_key => $7::text, trace_context => $8::text::jsonb) AS id;

-- name: job_status
SELECT id, status, false AS duplicate FROM job_queue WHERE id = $1::bigint;

-- name: enqueue_many
-- Many jobs in one statement: column arrays $1..$9, one element per job, the trace context
-- $10 they all share, and $11 the distinct dedupe keys among them. unnest feeds the insert
-- in array order, so the identity ids of the rows inserted without a dedupe key ascend in
-- input order. Returns those ids, ascending, and for each dedupe key the job that holds it:
-- inserted now, or live already (then nothing was inserted for it). Arrays, not rows: one
-- value each to decode for 100,000 jobs.
WITH inserted AS (
  INSERT INTO job_queue (task_type, payload, run_at, queue, priority, max_attempts,
                         dedupe_key, requested_by, concurrency_key, trace_context)
  SELECT task_type, payload::jsonb, coalesce(run_at, now()), queue, priority, max_attempts,
         dedupe_key, requested_by, concurrency_key, $10::text::jsonb
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::integer[],
                $6::integer[], $7::text[], $8::uuid[], $9::text[])
         AS t(task_type, payload, run_at, queue, priority, max_attempts, dedupe_key,
              requested_by, concurrency_key)
  ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
  DO NOTHING
  RETURNING id, dedupe_key
), held AS (
  SELECT id, dedupe_key FROM inserted WHERE dedupe_key IS NOT NULL
  UNION ALL
  SELECT j.id, j.dedupe_key
    FROM job_queue j
   WHERE j.dedupe_key = ANY($11::text[])
     AND j.status IN ('pending', 'running')
)
SELECT (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM inserted
         WHERE dedupe_key IS NULL) AS plain_ids,
       (SELECT coalesce(array_agg(id), '{}') FROM held) AS held_ids,
       (SELECT coalesce(array_agg(dedupe_key), '{}') FROM held) AS held_keys;

-- name: live_dedupe_ids
-- The live jobs holding dedupe keys $1 (keys a concurrent transaction took while
-- enqueue_many ran: its statement's snapshot could not see them), as enqueue_many's arrays.
SELECT '{}'::bigint[] AS plain_ids,
       coalesce(array_agg(id), '{}') AS held_ids,
       coalesce(array_agg(dedupe_key), '{}') AS held_keys
  FROM job_queue
 WHERE dedupe_key = ANY($1::text[])
   AND status IN ('pending', 'running');
