"""The handlers this worker ships. Importing the package registers all of them."""

from handlers import (
    challenges,
    demo,
    endpoints,
    functions,
    game_platform,
    maintenance,
    metrics,
    trading,
    usage,
    wearables,
)

__all__ = [
    "challenges",
    "demo",
    "endpoints",
    "functions",
    "game_platform",
    "maintenance",
    "metrics",
    "trading",
    "usage",
    "wearables",
]
