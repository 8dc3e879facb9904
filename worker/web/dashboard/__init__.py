"""The admin dashboard: server-rendered pages to watch and steer the queue.

Mounted at /dashboard on the worker's web application when WORKER_DASHBOARD_USERS is set
(the daemon serves it on WORKER_HTTP_PORT; `python -m worker serve` serves it alone).

- app.py: the Starlette application (login gate, CSRF/Origin checks, security headers,
  routes)
- auth.py: passwords, server-side sessions with signed cookies, CSRF tokens
- pages.py (GET) and actions.py (POST, through worker.admin's audited use cases); view.py:
  what both work with
- render.py + templates/ + static/: Jinja2 with autoescaping, inline SVG charts, one CSS file
"""
