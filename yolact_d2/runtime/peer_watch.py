"""Ending every rank of a multi-node job when one of them dies (docs/RELIABILITY.md, "Cluster jobs").

Without this, the survivors of a rank that raised or was killed wait in their next collective until
the process group's timeout (``--dist-timeout``, 30 minutes by default; NCCL does not notice a dead peer
earlier). Each rank of a submitit job runs a :class:`PeerWatch` thread on the job's shared folder:

* it rewrites ``rank<k>.alive`` every ``poll_s`` seconds (a counter, its host and its log);
* a rank that raises writes ``rank<k>.failed`` (its error's first line and its log) before it exits;
* a rank that ends normally (or stops for a requeue) writes ``rank<k>.exited``.

The first rank that finds another one dead writes the dead rank's ``.failed`` note for it.

A watcher that sees another rank's ``.failed`` file, a rank on its own machine whose process is gone, or
an ``.alive`` file that has not changed for ``dead_after_s`` seconds (measured on the watcher's own
clock: no clock comparison between nodes), logs one line naming that rank and its log and ends its own
process with status 1.
"""
import logging
import os
import socket
import threading
import time
from typing import Dict, Optional

from ..utils.atomic_io import atomic_write_bytes, process_alive
from ..utils.errors import first_line

__all__ = ["PeerWatch", "PEER_FAILED_EXIT_STATUS"]

logger = logging.getLogger(__name__)

PEER_FAILED_EXIT_STATUS = 1
# A collective fails as soon as a peer's sockets close, before its parent has reaped it: how long a
# failing rank looks for a dead peer on its machine before it takes the blame itself.
GONE_GRACE_S = 2.0


def _process_gone(pid: int) -> bool:
    """No such process, or a zombie (dead, not yet reaped by its parent)."""
    if not process_alive(pid):
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class PeerWatch:
    """Heartbeats and failure notes of ``world_size`` ranks in ``folder`` (one folder per job attempt)."""

    def __init__(self, folder: str, rank: int, world_size: int, log_path: str, poll_s: float = 10.0,
                 dead_after_s: float = 180.0, on_peer_failure=None):
        self.folder, self.rank, self.world_size = folder, rank, world_size
        self.log_path, self.poll_s, self.dead_after_s = log_path, poll_s, dead_after_s
        self._on_peer_failure = on_peer_failure or self._end_process
        self._stop = threading.Event()
        self._beats = 0
        self._seen: Dict[int, tuple] = {}  # rank -> (last heartbeat text, monotonic time it changed)
        os.makedirs(folder, exist_ok=True)

    def _path(self, rank: int, kind: str) -> str:
        return os.path.join(self.folder, f"rank{rank}.{kind}")

    def _describe(self) -> str:
        return f"host {socket.gethostname()}, log {self.log_path}"

    # ------------------------------------------------------------------ this rank
    def start(self) -> "PeerWatch":
        self._beat()
        start = time.monotonic()
        self._seen = {r: ("", start) for r in range(self.world_size) if r != self.rank}
        threading.Thread(target=self._run, name="yolact_d2-peer-watch", daemon=True).start()
        return self

    def _beat(self) -> None:
        self._beats += 1
        text = f"{self._beats}\n{socket.gethostname()}\n{os.getpid()}\n{self._describe()}\n"
        atomic_write_bytes(self._path(self.rank, "alive"), text.encode(), sync=False)

    def failed(self, exc: BaseException) -> None:
        """This rank raised ``exc``: tell the others, unless another rank failed first or a rank on this
        machine is gone (then this error is most likely the consequence, e.g. gloo's "Connection closed by
        peer", and the other rank's note is the one to read)."""
        self._stop.set()
        deadline = time.monotonic() + GONE_GRACE_S
        while self.first_failure() is None and time.monotonic() < deadline:
            if any(self._gone_on_this_machine(r) for r in self._seen):  # writes its note
                break
            time.sleep(0.1)
        if self.first_failure() is None:
            note = f"{type(exc).__name__}: {first_line(exc)} ({self._describe()})"
            atomic_write_bytes(self._path(self.rank, "failed"), note.encode())

    def exited(self) -> None:
        """This rank ends without an error: the others stop expecting its heartbeat."""
        self._stop.set()
        atomic_write_bytes(self._path(self.rank, "exited"), b"", sync=False)

    # ------------------------------------------------------------------ the others
    def first_failure(self) -> Optional[str]:
        """``"rank R failed: <note>"`` for the lowest rank with a failure note, None if there is none."""
        for r in range(self.world_size):
            try:
                with open(self._path(r, "failed")) as f:
                    return f"rank {r} failed: {f.read().strip()}"
            except OSError:
                continue
        return None

    def _heartbeat(self, rank: int) -> str:
        try:
            with open(self._path(rank, "alive")) as f:
                return f.read()
        except OSError:
            return ""

    def _note_for(self, rank: int, note: str) -> str:
        """Write the failure note of ``rank``, which cannot (unless it has one); returns the problem."""
        if not os.path.exists(self._path(rank, "failed")):
            atomic_write_bytes(self._path(rank, "failed"), note.encode())
        return f"rank {rank} {note}"

    def _gone_on_this_machine(self, rank: int) -> Optional[str]:
        """A rank on this machine whose process no longer exists, without an exit note: it was killed."""
        lines = self._heartbeat(rank).split("\n")
        if len(lines) < 4 or lines[1] != socket.gethostname() or not lines[2].isdigit():
            return None
        if os.path.exists(self._path(rank, "exited")) or not _process_gone(int(lines[2])):
            return None
        return self._note_for(rank, f"died without an error (killed, out of memory): its process {lines[2]} is "
                                    f"gone ({lines[3]})")

    def check_peers(self) -> Optional[str]:
        """What is wrong with another rank, or None: a failure note, a process on this machine that is
        gone, or a heartbeat that stopped (another machine)."""
        failure = self.first_failure()
        if failure is not None:
            return failure
        now = time.monotonic()
        for r, (text, since) in self._seen.items():
            if os.path.exists(self._path(r, "exited")):
                continue
            gone = self._gone_on_this_machine(r)
            if gone is not None:
                return gone
            current = self._heartbeat(r)
            if current != text:
                self._seen[r] = (current, now)
            elif now - since > self.dead_after_s:
                lines = current.split("\n")
                where = lines[3] if len(lines) >= 4 else "it never started its watch"
                return self._note_for(r, f"died without an error (killed, out of memory or its machine lost): no "
                                         f"heartbeat for {now - since:.0f} s ({where})")
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._beat()
                problem = self.check_peers()
            except OSError as e:  # the shared folder went away for a moment: try again next time
                logger.warning(f"peer watch: {e}")
                continue
            if problem is not None and not self._stop.is_set():
                self._on_peer_failure(problem)
                return

    def _end_process(self, problem: str) -> None:
        """The main thread may be blocked in a collective that never returns: end the process from here."""
        message = f"Rank {self.rank}: ending this rank because {problem}"
        try:
            logger.error(message)
            for handler in logging.getLogger("yolact_d2").handlers + logging.getLogger().handlers:
                handler.flush()
        finally:
            os.write(2, f"ERROR: {message}\n".encode())
            os._exit(PEER_FAILED_EXIT_STATUS)
