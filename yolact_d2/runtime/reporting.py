"""How the command-line programs report known user errors.

A known user error (:class:`~yolact_d2.utils.errors.UserError`) ends a program with one line on stderr
and exit status 1::

    error: <what>: <cause> (<how to fix>)

An unexpected error keeps its full traceback. ``--debug`` shows the traceback for known errors too.
Every entry point (``train_net.py``, ``demo/``, ``tools/``) runs its ``main`` through :func:`run_cli`.
"""
import logging
import os
import sys
from typing import Callable, Optional, Sequence, Tuple, Type

from ..utils.errors import UserError

__all__ = [
    "run_cli", "format_user_error", "KNOWN_USER_ERRORS", "debug_requested", "add_debug_argument",
    "WorkerUserErrorExit", "run_in_worker",
]


class WorkerUserErrorExit(SystemExit):
    """A worker of ``launch()`` already printed its one-line error; the process exits 1."""


# Exception types that are user errors wherever they reach a program's top level. Modules that
# define such errors subclass UserError; this tuple is for types we do not own.
KNOWN_USER_ERRORS: Tuple[Type[BaseException], ...] = (UserError,)


# Longest error line printed: a message quoting a value from a hostile file stays readable.
MAX_ERROR_LINE = 2000


def _worker_error_message(text: str) -> str:
    """A DataLoader worker's error comes back as ``"Caught X in DataLoader worker process 0.\nOriginal
    Traceback ...\nmodule.X: <message>"``: keep ``<message>``, the user's line."""
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    head, sep, message = last.partition(": ")
    return message if sep and " " not in head else last


def format_user_error(exc: BaseException) -> str:
    """The one line printed for a known user error (newlines in the message folded, at most
    MAX_ERROR_LINE characters)."""
    text = " ".join(_worker_error_message(str(exc)).split())
    if len(text) > MAX_ERROR_LINE:
        text = f"{text[:MAX_ERROR_LINE - 40]}... ({len(text):,} characters in all)"
    return f"error: {text}"


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """True if ``--debug`` is on the command line or ``YOLACT_D2_DEBUG=1`` is set."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("YOLACT_D2_DEBUG", "") not in ("", "0")


def add_debug_argument(parser) -> None:
    """Add ``--debug`` (full tracebacks for known user errors too) to an argparse parser."""
    parser.add_argument(
        "--debug", action="store_true",
        help="show the full traceback of known user errors too (also: YOLACT_D2_DEBUG=1)",
    )


def _child_exited_after_user_error(exc: BaseException) -> bool:
    """``launch()``'s join raises ProcessExitedException when a worker exits with status 1, which
    is what a worker does after printing its one-line error (see :func:`run_cli`)."""
    return type(exc).__name__ == "ProcessExitedException" and getattr(exc, "exit_code", None) == 1


def _writes_to_file(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    name = getattr(stream, "name", None)
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return stream not in consoles and isinstance(name, str) and not name.startswith("<")


def _log_traceback_to_files(message: str, logger_name: str = "yolact_d2") -> None:
    """Keep the current exception's traceback in the run's log file (``log.txt``, for bug reports)
    but off the console, where the one ``error:`` line is all a user should see: Detectron2's
    ``setup_logger`` gives the same logger a DEBUG-level stdout handler next to the file one."""
    logger = logging.getLogger(logger_name)
    record = logger.makeRecord(logger.name, logging.DEBUG, __file__, 0, message, None, sys.exc_info())
    while logger is not None:
        for handler in logger.handlers:
            if _writes_to_file(handler) and record.levelno >= handler.level:
                handler.handle(record)
        logger = logger.parent if logger.propagate else None


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
        _log_traceback_to_files("user error")
        print(format_user_error(e), file=sys.stderr, flush=True)
        return 1
    except Exception as e:
        if _child_exited_after_user_error(e) and not debug_requested(argv):
            return 1  # the worker printed the line; no second traceback
        raise
    return int(status or 0)


def run_in_worker(main: Callable[..., Optional[int]], *args):
    """For the ``main_func`` of Detectron2's ``launch()``: runs ``main(*args)`` and, after a known
    user error, prints its line and exits the worker with status 1 (the parent's :func:`run_cli`
    then exits 1 without a second traceback). Returns ``main``'s result otherwise."""
    result = []
    status = run_cli(lambda: result.append(main(*args)))
    if status:
        raise WorkerUserErrorExit(status)
    return result[0] if result else None
