"""The JSON API under /api/v1 (FastAPI): see router.py."""
