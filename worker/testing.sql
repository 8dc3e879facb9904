-- Statements of worker.testing (the kit for testing handlers against a real database).

-- name: insert_job
-- One job to run now: task type $1, payload $2, queue $3, max attempts $4.
INSERT INTO job_queue (task_type, payload, queue, max_attempts)
VALUES ($1, $2, $3, $4)
RETURNING id;

-- name: job
SELECT * FROM job_queue WHERE id = $1;

-- name: job_runs
-- A job's attempts, oldest first.
SELECT * FROM job_runs WHERE job_id = $1 ORDER BY id;

-- name: enqueued
-- Jobs with ids above $1 (of task type $2 when not null), oldest first.
SELECT id, task_type, payload, queue, status, run_at, priority
  FROM job_queue
 WHERE id > $1 AND ($2::text IS NULL OR task_type = $2)
 ORDER BY id;

-- name: last_id
SELECT coalesce(max(id), 0) FROM job_queue;
