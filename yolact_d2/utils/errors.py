"""Known user errors and how the command-line programs report them.

A *known* user error (a file that does not exist, a config key that is wrong, a checkpoint that is
refused) ends a program with one line on stderr and exit status 1::

    error: <what>: <cause> (<how to fix>)

An unexpected error keeps its full traceback. ``--debug`` shows the traceback for known errors too.
Every entry point (``train_net.py``, ``demo/``, ``tools/``) runs its ``main`` through
:func:`run_cli`.
"""
import logging
import os
import sys
from typing import Callable, Optional, Sequence, Tuple, Type

__all__ = ["UserError", "run_cli", "format_user_error", "KNOWN_USER_ERRORS", "debug_requested"]


class UserError(Exception):
    """An error the user can fix. ``what`` names the file, key or entry; ``cause`` says what is
    wrong with it; ``fix`` (optional) says how to fix it."""

    def __init__(self, what: str, cause: str, fix: Optional[str] = None):
        self.what, self.cause, self.fix = str(what), str(cause), (str(fix) if fix else None)
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.what}: {self.cause}"
        return f"{text} ({self.fix})" if self.fix else text

    def __reduce__(self):  # picklable across launch()'s worker processes
        return (type(self), (self.what, self.cause, self.fix))


# Exception types that are user errors wherever they reach a program's top level. Modules that
# define such errors subclass UserError; this tuple is for types we do not own.
KNOWN_USER_ERRORS: Tuple[Type[BaseException], ...] = (UserError,)


def format_user_error(exc: BaseException) -> str:
    """The one line printed for a known user error (newlines in the message folded)."""
    text = " ".join(str(exc).split())
    return f"error: {text}"


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """True if ``--debug`` is on the command line or ``YOLACT_D2_DEBUG=1`` is set."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("YOLACT_D2_DEBUG", "") not in ("", "0")


def run_cli(main: Callable[[], Optional[int]], argv: Optional[Sequence[str]] = None,
            known: Tuple[Type[BaseException], ...] = KNOWN_USER_ERRORS) -> int:
    """Run ``main()`` and turn a known user error into one ``error: ...`` line and status 1.

    Returns ``main``'s status (0 for ``None``). With ``--debug`` the known error is re-raised, so
    the full traceback is shown. Unexpected exceptions always propagate unchanged.
    """
    try:
        status = main()
    except known as e:
        if debug_requested(argv):
            raise
        logging.getLogger("yolact_d2").debug("user error", exc_info=True)
        print(format_user_error(e), file=sys.stderr, flush=True)
        return 1
    return int(status or 0)
