"""Errors a user can fix. Every command prints the message as one line and exits 2; anything else
that escapes is a bug."""


class UserError(Exception):
    """Bad input or an impossible request; the message says what is wrong and what to do."""


class DataError(UserError):
    """A data set, image or ground-truth file that cannot be read: missing folder, empty class, bad file."""


class ModelError(UserError):
    """A model file or manifest that cannot be used: missing, invalid, or not the file it describes."""
