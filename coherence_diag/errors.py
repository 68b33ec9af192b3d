"""Error types shared by every layer.

Library code raises these; only the CLI turns them into exit codes and messages
(InputError -> exit 2). Nothing below the CLI prints or exits.
"""

from __future__ import annotations


class CoherenceDiagError(Exception):
    """Base class for every error the tool reports to a user."""


class InputError(CoherenceDiagError):
    """Bad usage or bad input: unreadable trace, schema violation, invalid rule or policy.

    The message is complete and user-facing: it names the file, the problem and what
    was expected. The CLI prints it as-is and exits 2.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TraceError(InputError):
    """A trace file or directory cannot be used as a trace."""


class RuleError(InputError):
    """A rule or policy file is invalid."""
