"""A PostgreSQL job-queue worker: claim, run, retry and audit jobs stored in `job_queue`."""

__version__ = "0.1.0"
