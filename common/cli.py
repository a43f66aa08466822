"""How every command ends: its exit code, a user's error as one line on stderr with exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from common.errors import UserError


def run_command(command: Callable[[], int], *, name: str, tag_errors: bool = True) -> int:
    """command()'s exit code; a UserError prints `NAME: error: MESSAGE` (`NAME: MESSAGE` untagged) and
    gives 2, Ctrl-C prints `NAME: interrupted` and gives 130. Anything else is a bug and propagates."""
    try:
        return command()
    except UserError as exc:
        print(f"{name}: {'error: ' if tag_errors else ''}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
