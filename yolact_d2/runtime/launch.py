"""Detectron2's ``launch()`` for multi-machine runs that says what it waits for
(docs/RELIABILITY.md): the dist URL, this machine's rank, the world size and the timeout are logged
when the rendezvous starts and again while it lasts, and a rendezvous that times out (a peer that
never started, a wrong --dist-url) ends with one error line instead of a worker traceback."""
import os
import sys
import tempfile
import threading
from datetime import timedelta

from detectron2.engine import launch as d2_launch

from ..utils.errors import UserError

__all__ = [
    "add_dist_timeout_argument", "check_launch_arguments", "launch_logging_rendezvous", "DEFAULT_DIST_TIMEOUT_MINUTES",
]

DEFAULT_DIST_TIMEOUT_MINUTES = 30.0  # Detectron2's (and PyTorch's) default
_TIMEOUT_SIGNS = ("Timed out", "timed out", "DistStoreError", "DistNetworkError", "TimeoutError")


def add_dist_timeout_argument(parser) -> None:
    parser.add_argument(
        "--dist-timeout", type=float, default=DEFAULT_DIST_TIMEOUT_MINUTES, metavar="MINUTES",
        help="minutes to wait for the other machines (and for any collective operation) before giving up; "
        "default %(default)s",
    )


def check_launch_arguments(parser, args) -> None:
    """Launch flags that would hang (a machine rank no peer can match), crash in the rendezvous (a
    --dist-url without a scheme) or mean nothing: a usage error (``parser.error``) before anything starts.
    ``--num-gpus 0`` stays one process, as in Detectron2."""
    if args.num_gpus < 0:
        parser.error(f"--num-gpus must be >= 0, got {args.num_gpus}")
    if args.num_machines < 1:
        parser.error(f"--num-machines must be >= 1, got {args.num_machines}")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(f"--machine-rank must be in 0..{args.num_machines - 1} for --num-machines {args.num_machines}, "
                     f"got {args.machine_rank}")
    if args.dist_url != "auto" and "://" not in args.dist_url:
        parser.error(f"--dist-url must be 'auto' or a URL such as tcp://HOST:PORT, got {args.dist_url!r}")
    if not args.dist_timeout > 0:
        parser.error(f"--dist-timeout must be > 0 minutes, got {args.dist_timeout}")
    if args.num_gpus * args.num_machines > 1 and args.machine_rank == 0:
        busy = _busy_port(args.dist_url)
        if busy:
            parser.error(f"--dist-url {args.dist_url}: {busy}; choose another port, or --dist-url auto on one machine")


def _busy_port(dist_url: str) -> str:
    """Why machine rank 0 cannot serve the rendezvous at ``tcp://HOST:PORT`` (a port in use: torch
    would end in a DistNetworkError traceback of every worker), or "" when it can or we cannot tell
    (another host's address, a name that does not resolve: torch reports those)."""
    import errno
    import socket
    from urllib.parse import urlparse

    try:
        parsed = urlparse(dist_url)
        host, port = parsed.hostname, parsed.port
    except ValueError as e:  # a port that is not a number or out of range
        return f"not a valid tcp://HOST:PORT ({e})"
    if parsed.scheme != "tcp" or not host or not port:
        return ""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the TCPStore server does
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} is already in use on {host} (another training, or any other program)"
            return ""
    return ""


def _say(message: str) -> None:
    print(f"[yolact_d2 launch] {message}", file=sys.stderr, flush=True)


class _JoinedFlag:
    """A file the first worker creates once every process has joined (it runs main)."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="yolact_d2_joined_")
        os.close(fd)
        os.unlink(self.path)

    def joined(self) -> bool:
        return os.path.exists(self.path)

    def remove(self) -> None:
        if self.joined():
            os.unlink(self.path)


def _main_after_rendezvous(main_func, flag_path, *args):
    from detectron2.utils import comm

    if comm.get_local_rank() == 0:
        open(flag_path, "w").close()
    return main_func(*args)


def _timeout_cause(exc: BaseException) -> str:
    if type(exc).__name__ != "ProcessRaisedException":
        return ""
    lines = [line.strip() for line in str(exc).splitlines() if any(s in line for s in _TIMEOUT_SIGNS)]
    return lines[-1] if lines else ""


def launch_logging_rendezvous(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
                              args=(), timeout_minutes=DEFAULT_DIST_TIMEOUT_MINUTES, **kwargs):
    """``detectron2.engine.launch`` with ``timeout=timedelta(minutes=timeout_minutes)``; with
    ``num_machines > 1`` it logs the rendezvous (every ``min(60 s, max(5 s, timeout / 4))`` until all joined)
    and turns its timeout into a :class:`UserError`."""
    timeout = timedelta(minutes=timeout_minutes)
    if num_machines <= 1:
        return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                         dist_url=dist_url, args=args, timeout=timeout, **kwargs)
    world_size = num_machines * num_gpus_per_machine
    where = (f"{dist_url}: machine rank {machine_rank} of {num_machines}, world size {world_size} "
             f"({num_gpus_per_machine} process(es) per machine)")
    others = ", ".join(str(r) for r in range(num_machines) if r != machine_rank)
    _say(f"waiting for the other machines at {where}; missing: machine rank(s) {others} (each must run the same "
         f"command with its --machine-rank); timeout {timeout_minutes:g} min (--dist-timeout)")
    flag, done = _JoinedFlag(), threading.Event()

    def report():
        waited, period = 0.0, max(5.0, min(60.0, timeout.total_seconds() / 4))
        while not done.wait(period):
            waited += period
            if flag.joined():
                _say(f"all {world_size} processes joined at {dist_url}")
                return
            _say(f"still waiting for machine rank(s) {others} at {dist_url} ({waited:.0f} s since launch; the "
                 f"{timeout_minutes:g} min timeout counts from the start of the rendezvous)")

    threading.Thread(target=report, daemon=True).start()
    try:
        return d2_launch(_main_after_rendezvous, num_gpus_per_machine, num_machines=num_machines,
                         machine_rank=machine_rank, dist_url=dist_url, args=(main_func, flag.path, *args),
                         timeout=timeout, **kwargs)
    except Exception as e:
        cause = _timeout_cause(e)
        if flag.joined() or not cause:
            raise
        raise UserError(
            f"--dist-url {where}",
            f"the other machines did not join within {timeout_minutes:g} min ({cause})",
            fix=f"start the same command on machine rank(s) {others} with the same --dist-url and --num-machines, "
            "check that the address and port are reachable, or raise --dist-timeout",
        ) from None
    finally:
        done.set()
        flag.remove()
