"""The worker's HTTP surface: one ASGI application (app.py) with the JSON API (api/), the
dashboard (dashboard/), /health (health.py) and /metrics (metrics.py), served by uvicorn
inside the worker's own event loop. It works through worker.admin's use cases and the
engine's store; the engine never imports it."""
