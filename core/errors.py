"""The one base of every error LeukoScope raises on purpose (defined in `models.errors`, since the
model zoo imports nothing of the library): see there."""
from __future__ import annotations

from models.errors import LeukoScopeError

__all__ = ["LeukoScopeError"]
