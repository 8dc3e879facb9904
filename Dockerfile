# The worker daemon, for Fly.io or any container platform.
#
#   docker build -t pg-job-worker .
#   docker run --rm -e DATABASE_URL=postgresql://user:pass@host:5432/db pg-job-worker
#
# DATABASE_URL is required here: the embedded PostgreSQL is for a first run on a laptop,
# not for containers (its data would die with the container). Apply the schema once with
# `python -m worker migrate`, or set WORKER_AUTO_MIGRATE=true.

# -- build: install the project and its dependencies into a virtualenv --------------------
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY handlers ./handlers
COPY schema ./schema
RUN pip install .

# -- runtime: the virtualenv only, run by an unprivileged user ---------------------------------
FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_LOG_FORMAT=json \
    WORKER_HTTP_HOST=0.0.0.0 \
    WORKER_HTTP_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080

# Exec form, no shell in between: Python is PID 1 and receives SIGTERM itself, stops
# claiming and finishes in-flight jobs within WORKER_SHUTDOWN_GRACE_S.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ['WORKER_HTTP_PORT'], timeout=4)"]
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
