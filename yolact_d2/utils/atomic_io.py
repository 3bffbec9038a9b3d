"""Atomic file writes, shared by checkpoints, weight conversion, evaluation results and the
synthetic dataset (docs/RELIABILITY.md), and the creation of output folders.

A file is written to a temporary name in its own folder, flushed to disk, then renamed over the
final name (``os.replace``, atomic on POSIX), and the folder is flushed so that the rename itself
survives a power cut. A reader, or a process restarted after a kill, therefore sees the previous
complete file or the new one, never a partial one. Temporary names are ``.<name>.tmp-<pid>-<random>``
so that :func:`remove_stale_temporary_files` can tell which ones a dead process left.
"""
import contextlib
import os
import shutil
import uuid
from typing import IO, Any, Callable, Iterator, List, Optional

from .errors import UserError

__all__ = [
    "make_output_dir",
    "prepare_output_file",
    "atomic_open",
    "atomic_write_bytes",
    "fsync_dir",
    "process_alive",
    "publish_file",
    "remove_stale_temporary_files",
    "stale_entries",
    "os_error_in",
    "free_space_text",
]

_TMP_MARK = ".tmp-"


def make_output_dir(path: str, what: str) -> str:
    """Create the folder ``path`` (and its parents) if needed and return it. A path that cannot be a
    folder (a file is in the way, no permission) is a :class:`UserError` naming ``what`` (the key or
    option that gave the path), not an OSError traceback."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {path}", f"cannot be created ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}", "is not writable by this user")
    return path


def prepare_output_file(path: str, what: str) -> str:
    """Check, before the work, that the file ``path`` (given by the option ``what``) can be written:
    its folder is created if needed (:func:`make_output_dir`); a folder at ``path`` is a
    :class:`UserError`. Results computed for an hour are not then lost to a missing folder."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path}", "is a folder", "give a file name")
    make_output_dir(os.path.dirname(os.path.abspath(path)), f"{what} folder")
    return path


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", *, sync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on a normal exit, flush it to disk and
    rename it to ``path``; on an exception, delete it and leave ``path`` as it was.

    ``mode``: "w" or "wb". ``sync=False`` skips the two fsyncs, for many small files whose
    completeness is marked by another file written with ``sync=True`` (the rename stays atomic).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    f = open(tmp, mode.replace("w", "x"))
    try:
        yield f
        f.flush()
        if sync:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` with :func:`atomic_open`."""
    with atomic_open(path, "wb", sync=sync) as f:
        f.write(data)


def publish_file(source: str, target: str) -> None:
    """Flush the complete file ``source`` to disk and rename it over ``target`` (same file system),
    for files that a library wrote to a staging folder."""
    with open(source, "rb") as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    fsync_dir(os.path.dirname(os.path.abspath(target)))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def stale_entries(folder: str, writer_pid: Callable[[str], Optional[int]]) -> List[str]:
    """The paths in ``folder`` whose name ``writer_pid`` maps to the id of the process that made them
    (None: not such an entry), where that process is gone or is this one (left by an earlier run
    with the same pid). Shared by the temporary files here and the evaluation's staging folders."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    stale = []
    for name in names:
        pid = writer_pid(name)
        if pid is not None and (pid == os.getpid() or not process_alive(pid)):
            stale.append(os.path.join(folder, name))
    return stale


def _temporary_file_writer(name: str) -> Optional[int]:
    if not name.startswith(".") or _TMP_MARK not in name:
        return None
    try:
        return int(name.rsplit(_TMP_MARK, 1)[1].split("-")[0])
    except ValueError:
        return None


def remove_stale_temporary_files(folder: str) -> List[str]:
    """Delete the temporary files of :func:`atomic_open` in ``folder`` whose writer process is
    gone (killed during a write); returns their paths."""
    removed = []
    for path in stale_entries(folder, _temporary_file_writer):
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def os_error_in(exc: BaseException):
    """The OSError behind ``exc`` (itself, or in its cause / context chain), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def free_space_text(folder: str) -> str:
    """How much space is free on ``folder``'s disk, for an error line ("1.2 GiB free")."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown free space"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1024.0
