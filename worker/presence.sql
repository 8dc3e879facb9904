-- Worker presence (worker/presence.py): one row of job_workers per running worker process.
-- A few statements per worker per minute, none per job. A test PREPAREs each of them.

-- name: presence_join
-- Announce worker $1 (host $2, pid $3, version $4, heartbeat $5 s, queues $6, concurrency
-- $7), replacing a row left under the same id by an earlier process; rows silent for a day
-- (workers killed without a clean shutdown) go first.
WITH gone AS (
  DELETE FROM job_workers WHERE last_seen_at < now() - interval '1 day' AND id <> $1
)
INSERT INTO job_workers (id, host, pid, version, heartbeat_s, queues, concurrency)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE
   SET host = excluded.host, pid = excluded.pid, version = excluded.version,
       started_at = now(), last_seen_at = now(), heartbeat_s = excluded.heartbeat_s,
       queues = excluded.queues, concurrency = excluded.concurrency, in_flight = 0,
       running = '[]'::jsonb;

-- name: presence_beat
-- Worker $1 (pid $3) is alive: $2 jobs in flight (null: count its running rows), and what
-- it runs now, from its own running rows (job_queue_running_idx; a few ids per task type).
-- No row: it was removed meanwhile (the caller announces itself again).
WITH mine AS (
  SELECT id, task_type FROM job_queue WHERE status = 'running' AND locked_by = $1
), by_task AS (
  SELECT task_type, count(*) AS jobs, (array_agg(id ORDER BY id))[1:5] AS job_ids
    FROM mine
   GROUP BY task_type
)
UPDATE job_workers w
   SET last_seen_at = now(),
       in_flight = coalesce($2::int, (SELECT count(*) FROM mine)::int),
       running = (SELECT coalesce(jsonb_agg(jsonb_build_object('task_type', t.task_type,
                                                               'jobs', t.jobs,
                                                               'job_ids', to_jsonb(t.job_ids))
                                            ORDER BY t.jobs DESC, t.task_type), '[]'::jsonb)
                    FROM by_task t)
 WHERE w.id = $1 AND w.pid = $3
RETURNING w.id;

-- name: presence_leave
-- A clean shutdown: worker $1's row goes (unless another process has taken the id since).
DELETE FROM job_workers WHERE id = $1 AND pid = $2;
