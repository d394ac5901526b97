"""The one error type a user sees: a single line, exit code 2."""


class UsageError(Exception):
    """Bad input from the user: the message names the problem and what to do."""

    exit_code = 2
