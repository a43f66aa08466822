"""Errors a user can fix: the CLI prints the message as one line and exits 2."""


class UserError(Exception):
    """Bad input or an impossible request; the message says what is wrong and what to do."""


class DataError(UserError):
    """A data set that cannot be read: missing folder, empty class, bad IDX file, unreadable image."""
