"""Small shared helpers: user-facing errors, atomic writes, device choice, run folders and provenance."""

from clearct.common.errors import ClearctError

__all__ = ["ClearctError"]
