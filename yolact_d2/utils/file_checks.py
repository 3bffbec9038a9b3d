"""Why a path cannot be read as a file, before anything opens it (docs/RELIABILITY.md, "Hangs and
raw tracebacks"): opening a FIFO blocks until a writer comes (forever, and SIGTERM's default action
is all that ends it), a symbolic-link loop fails with an errno text that names no file, and a folder
or a device gives a confusing error later. Leaf module: no yolact_d2 imports."""
import errno
import os
import stat
from typing import Optional

__all__ = ["unreadable_file_cause"]


def unreadable_file_cause(path: str) -> Optional[str]:
    """None when ``path`` is a regular file (or a link to one) or a URL; else why it cannot be read:
    ``"does not exist"``, ``"is a FIFO (named pipe)..."``, ``"is a symbolic link loop (ELOOP)"``, ..."""
    if "://" in str(path):
        return None  # read through PathManager (http://, manifold://...): not ours to check
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)})"
        return "does not exist"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (ELOOP: too many levels of symbolic links)"
        return f"cannot be read ({e.strerror or e}, {errno.errorcode.get(e.errno, e.errno)})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file: reading it would wait for a writer forever"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"
