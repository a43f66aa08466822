"""Errors a user can fix: the CLI prints the message (one or more lines, no traceback) and exits 2.

Anything else that escapes is a bug and exits 1 with a traceback in the log.
"""

from common.errors import UserError


class InspectorError(UserError):
    """Bad configuration, missing file or model: the message says what is wrong and what to do."""
