"""Error classes of the core. Callers catch these, not ``Exception``.

Every message says what was wrong and what is allowed, so a user can fix the input without
reading the code.
"""

from __future__ import annotations


class RobustMonitorError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(RobustMonitorError, ValueError):
    """A parameter or configuration value is invalid (says which, and what is allowed)."""


class ModelError(RobustMonitorError):
    """A model file is missing, corrupt, or does not match its metadata."""


class InputError(RobustMonitorError, ValueError):
    """An input frame is malformed: wrong rank, shape, dtype, encoding, or non-finite values."""
