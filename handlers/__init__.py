"""The handlers this worker ships. Importing the package registers all of them."""

from handlers import demo

__all__ = ["demo"]
