"""Errors a user can act on: each message says what went wrong and what to do next."""


class RecqError(RuntimeError):
    """A failure the CLI prints without a traceback."""
