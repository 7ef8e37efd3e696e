"""User-facing errors: one clear line and a non-zero exit, never a bare traceback.

Library code raises `UserError` (or a subclass) for anything the user can fix: a missing file,
a malformed record, a bad flag or gin binding, a missing checkpoint. Binaries wrap their `main`
in `exit_on_user_error`, which prints `error: <message>` to stderr and exits with status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Something the user can fix; the message says what and where."""


class DataError(UserError):
    """A data file is missing or holds a record that fails validation (`file:line: field: reason`)."""


class ConfigError(UserError):
    """A flag, gin file or gin binding is wrong."""


class CheckpointError(UserError):
    """A checkpoint is missing, incomplete or does not match the model."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Turns a `UserError` raised by `main` into `error: ...` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper
