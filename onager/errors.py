"""Errors that the CLI turns into one line on stderr and an exit code."""


class OnagerError(Exception):
    """A failure the user can act on; the CLI exits 1."""

    exit_code = 1


class UsageError(OnagerError):
    """Bad input on the command line or in a file; the CLI exits 2."""

    exit_code = 2
