"""The one error base of the project: every error a person may see derives from it.

Each subclass carries its user-facing message (``str(exc)``) and the exit code the CLI
returns for it; ``orchestrator.cli.main`` maps them in one place.
"""

from __future__ import annotations


class EscError(Exception):
    """An error with a message for a person; ``exit_code`` is what the CLI returns."""

    exit_code: int = 2

    @property
    def message(self) -> str:
        return str(self)


class ConfigurationError(EscError, RuntimeError):
    """The configuration does not allow what was asked (e.g. no Redis to talk to)."""


class SettingError(ConfigurationError, ValueError):
    """An environment variable holds a value its setting cannot take."""


class JobError(EscError, ValueError):
    """A task message that does not describe a valid job."""


class ClipError(EscError):
    """A clip that cannot be extracted for a reason that a retry will not fix.

    ``str(exc)`` is ``"<path>: <reason>"``; the extraction task records it and raises it as is.

    Attributes:
        path: The audio file (as given in the job, relative to the dataset root).
        reason: A sentence a person understands.
    """

    def __init__(self, path: str, reason: str, *, job_mismatch: bool = False) -> None:
        # args are (path, reason) so that Celery can rebuild the error from its JSON form
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        # The job does not name a clip of the store (index out of range, or another
        # path at that index): there is no clip to record the failure against.
        self.job_mismatch = job_mismatch

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
