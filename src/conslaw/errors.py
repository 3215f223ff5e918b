"""User-facing errors.

Every error a user can trigger with bad input is a :class:`ConslawError`
whose message says what was expected, what came, and how to fix it. The
CLI prints it on one line and exits with status 2.
"""

from __future__ import annotations


class ConslawError(ValueError):
    """Bad input: the message names the problem and the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}; fix: {fix}")
