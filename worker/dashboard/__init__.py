"""The admin dashboard: server-rendered pages to watch and steer the queue.

Mounted at /dashboard on the worker's HTTP server when WORKER_HTTP_PORT and
WORKER_DASHBOARD_USERS are both set, or served alone by `python -m worker dashboard`.

- app.py: the Dashboard handler (login gate, CSRF/Origin checks, security headers, routes)
- auth.py: passwords, signed session cookies, CSRF tokens, the failed-login limiter
- pages.py (GET) and actions.py (POST, audited); view.py: what both work with
- render.py + templates/ + static/: Jinja2 with autoescaping, inline SVG charts, one CSS file
"""
