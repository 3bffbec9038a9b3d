"""The errors a user can fix: a file that does not exist, a config key that is wrong, a checkpoint that
is refused. Every known user error is a :class:`UserError` with three parts::

    <what>: <cause> (<how to fix>)

The plugin core raises them; how a program reports them (one ``error:`` line, exit status 1) is the
run-time layer's business (:mod:`yolact_d2.runtime.reporting`).
"""
from typing import Optional

__all__ = ["UserError", "ConfigError", "DataError", "first_line"]


class UserError(Exception):
    """An error the user can fix. ``what`` names the file, key or entry; ``cause`` says what is
    wrong with it; ``fix`` (optional) says how to fix it."""

    def __init__(self, what: str, cause: Optional[str] = None, fix: Optional[str] = None):
        # A single argument is a complete message: only UnknownConfigKeyError, which keeps yacs' own words.
        self.what = str(what)
        self.cause = None if cause is None else str(cause)
        self.fix = str(fix) if fix else None
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.what if self.cause is None else f"{self.what}: {self.cause}"
        return f"{text} ({self.fix})" if self.fix else text

    def __reduce__(self):  # picklable across launch()'s worker processes
        return (type(self), (self.what, self.cause, self.fix))


class ConfigError(UserError, ValueError):
    """A config file, config key or command-line value that cannot be used."""


class DataError(UserError, ValueError):
    """A dataset file (json, image folder) that cannot be used."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch's and ONNX Runtime's are multi-line C++
    traces), or its type name when the message is empty; for the cause part of a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
