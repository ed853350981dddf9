"""The one error type a user (not a developer) must act on.

`bikeshare` prints a UserError as one line (what is wrong, where, what to do) instead of a
traceback; `--debug` or BIKESHARE_DEBUG=1 shows the traceback. Raised while loading the
configuration, also under `dagster definitions validate`, so a bad cities file fails before
any asset runs.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the operator can fix: a configuration value, a file, a refused action."""


class ConfigError(UserError, ValueError):
    """A bad cities file or environment variable (a ValueError for callers that expect one)."""
