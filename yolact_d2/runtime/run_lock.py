"""One run per ``OUTPUT_DIR`` (docs/RELIABILITY.md, "One run per output folder").

Two ``train_net.py`` runs started in one ``OUTPUT_DIR`` would interleave ``metrics.json`` and
overwrite each other's checkpoints and ``config.yaml``. The main process of a run takes an exclusive
POSIX lock (``fcntl.lockf``: per process, so forked data-loader workers do not keep it, and it works
on NFS) on ``OUTPUT_DIR/.lock`` before it writes anything there, and writes its pid, host and
command into it. A second run finds the lock held and refuses in one line naming that process.

The kernel releases the lock when its process ends, however it ends; a ``.lock`` that still names a
process (one killed with SIGKILL, a machine that crashed) is taken over with a warning naming it.
A clean exit empties the file (it is not removed: a run waiting to open it would lock a deleted
file). The workers of ``--num-gpus N`` share their job's lock: only the main process takes it.
"""
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from typing import Dict, Optional

from ..utils.errors import UserError

__all__ = ["LOCK_NAME", "OutputDirInUseError", "lock_output_dir", "unlock_output_dir"]

LOCK_NAME = ".lock"

# output folder (real path) -> the open, locked file descriptor of this process
_held: Dict[str, int] = {}


class OutputDirInUseError(UserError):
    """Another process holds the lock of an OUTPUT_DIR."""


def _owner(fd: int) -> Optional[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {"pid": "?", "host": "?", "command": text[:200]}
    return owner if isinstance(owner, dict) else None


def _describe(owner: Optional[dict]) -> str:
    if not owner:
        return "a process that has not written its name yet"
    text = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    if owner.get("started"):
        text += f", started {owner['started']}"
    return text + (f" ({owner['command']})" if owner.get("command") else "")


def lock_output_dir(output_dir: str) -> Optional[str]:
    """Take the lock of ``output_dir`` for this process (again: a no-op). Returns the message to log
    when a lock left by a process that ended without releasing it was taken over, else None.
    :class:`OutputDirInUseError` naming the holder when another process has it."""
    key = os.path.realpath(output_dir)
    path = os.path.join(key, LOCK_NAME)
    if key in _held:
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"OUTPUT_DIR lock {path}", f"cannot open it ({e.strerror or e})") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):  # a file system without locks: say so
            os.close(fd)
            raise UserError(f"OUTPUT_DIR lock {path}", f"cannot lock it ({e.strerror or e})",
                            "use an OUTPUT_DIR on a file system with file locks") from None
        owner = _owner(fd)
        os.close(fd)
        raise OutputDirInUseError(
            f"OUTPUT_DIR {output_dir}", f"another run is using it: {_describe(owner)}",
            "wait for it to finish, stop it, or give this run another OUTPUT_DIR",
        ) from None
    previous = _owner(fd)
    takeover = None
    if previous is not None:
        takeover = f"Took over the lock {path} of {_describe(previous)}, which ended without releasing it."
    me = {
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv])[:500],
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)
    _held[key] = fd
    return takeover


def unlock_output_dir(output_dir: str) -> None:
    """Release the lock of ``output_dir`` if this process holds it (the file is emptied, not removed)."""
    fd = _held.pop(os.path.realpath(output_dir), None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
