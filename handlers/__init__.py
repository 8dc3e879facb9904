"""The business handlers of the apps this worker serves, and their catalog.

Importing this package registers nothing: a deployment loads the apps it serves (`APPS`,
see handlers/apps.py), each of which names its handler modules and its schedule file.
`handlers.bundled` loads every app, the demo included (the demo command, tests).
"""

from handlers.apps import APPS, DEPLOYABLE, App

__all__ = ["APPS", "DEPLOYABLE", "App"]
