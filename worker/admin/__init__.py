"""Use cases shared by the CLI, the HTTP API and the dashboard.

- store.py: the control plane's SQL (queries.sql): reads in read-only, time-bounded
  transactions, and every change with its job_admin_audit row in the same transaction;
- jobs.py, schedules.py, queues.py, status.py: what an admin can do, with the checks and
  refusals (NotFound, Conflict, InvalidInput) every surface shares;
- pgcron.py: `import-pg-cron`, an app's pg_cron jobs brought over as native schedules.

Imports run one way: the CLI and worker.web use this package; the engine never does.
"""
