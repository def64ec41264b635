"""Errors a user can fix. The CLI prints them without a traceback and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (recipe, command line, files, data) with a message saying what to do."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class ConfigError(UserError):
    """The recipe (or an override) is wrong; every problem found is listed, not only the first."""


class DataError(UserError):
    """A data file, record or image is wrong; the message names the file and the record."""


class RunError(Exception):
    """Training or evaluation stopped for a reason the run itself hit (not a user mistake): exit status 1."""


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, message: str, signal_number: int):
        self.signal_number = signal_number
        super().__init__(message)
