"""The one base of every error LeukoScope raises on purpose.

It is defined here, in the model zoo, because models/ imports nothing of core/ (the library
builds on the zoo, not the other way round); `core.errors` is where the library and the app
import it from. Each subclass lives with the code that raises it (`core.imageio.ImageError`,
`core.dataset.DatasetError`, `models.convert.PretrainedUnavailable`, ...) and keeps the
built-in base it always had (ValueError, RuntimeError), so older `except` clauses still hold.
Its message is one sentence a user can act on: the app and the CLIs show it as is, and
`except LeukoScopeError` is how they tell it from a bug.
"""
from __future__ import annotations


class LeukoScopeError(Exception):
    """An expected failure with a message for the user (not a bug: no traceback is shown)."""
