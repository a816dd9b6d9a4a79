"""The small error taxonomy. Every error the CLI can show is one line that names the file, line or flag."""

from __future__ import annotations


class RdistillError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero."""

    exit_code = 2


class UsageError(RdistillError):
    """Bad input from the user: a file, a line, a field, a flag."""


class BadRow(UsageError):
    """One input row cannot be used (a missing or null field, a list where text belongs, a prompt too big for the
    model); ``--skip-bad-rows`` skips such rows, counted and listed, instead of stopping."""


class PluginError(RdistillError):
    """A plugin failed to load, collided with another, or a name is unknown."""


class TeacherError(RdistillError):
    """One teacher call failed. ``retryable`` says whether trying again may help."""

    exit_code = 1

    def __init__(self, message: str, *, kind: str = "error", retryable: bool = False, retry_after: float | None = None,
                 status: int | None = None):  # fmt: skip
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class GenerationError(RdistillError):
    """The run as a whole failed (every request failed, say); the message says why."""

    exit_code = 1


class BudgetExceeded(RdistillError):
    """``--max-cost`` was reached; what was paid for is journaled and a re-run resumes."""

    exit_code = 3


class CompletedWithFailures(RdistillError):
    """Every input was tried and the records are written, but more inputs failed than ``--allow-failures`` allows."""

    exit_code = 4


class Interrupted(RdistillError):
    """Ctrl-C or SIGTERM: no new calls were sent, the ones in flight were let finish and are journaled."""

    exit_code = 130


class Pending(RdistillError):
    """Work was handed to the provider (batches submitted with --no-wait) and the run cannot go on until it is done;
    the same command resumes. Exit 75 (EX_TEMPFAIL: try again later)."""

    exit_code = 75
