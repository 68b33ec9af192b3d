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


class LabelsError(InputError):
    """The labels file of a labelled suite (`rules score`) is missing or invalid."""


def collected(error: type[InputError], what: str, source: str, problems: list[str]) -> InputError:
    """One error for every problem found in a file: one problem inline, several as a list.

    `what` names the kind of file ("policy file", "labels file"); each problem already names
    the file and the place in it.
    """
    if len(problems) == 1:
        return error(f"invalid {what}: {problems[0]}", path=source)
    body = "\n".join(f"  - {p}" for p in problems)
    return error(f"invalid {what} {source} ({len(problems)} problems):\n{body}", path=source)
