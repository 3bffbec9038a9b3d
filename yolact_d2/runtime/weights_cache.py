"""``yolact://NAME`` weights (:mod:`.catalog`): downloaded once, converted, cached, then loaded like any
local file. Registered on Detectron2's ``PathManager``, so ``MODEL.WEIGHTS yolact://...`` works
wherever Detectron2 or yolact_d2 read weights (training, ``--eval-only``, the predictor, the demos,
the export and the model zoo).

The cache (``$YOLACT_D2_CACHE``, default ``<iopath cache>/yolact_d2``, i.e. ``~/.torch/iopath_cache/yolact_d2``):

* ``downloads/<file>``: the published file as downloaded (or put there by hand on an offline machine);
* ``<NAME>.pth``: it, converted to our parameter names (Detectron2 checkpoint format);
* ``<file>.sha256`` beside each: its sha256 (``sha256sum`` format), computed when it was written.
  A cached file that no longer matches is an error, never loaded.

Downloads go to a temporary file that is renamed when complete, with a bounded socket timeout.
``$YOLACT_D2_WEIGHTS_URL`` replaces the scheme and host of every download (a mirror with the same
paths; the tests serve files from 127.0.0.1). The files are read with the safe loader (tensors and
plain data only): nothing in them is executed.
"""
import contextlib
import hashlib
import logging
import os
import socket
import urllib.error
import urllib.request
from typing import Optional, Tuple
from urllib.parse import urlsplit

from iopath.common.file_io import PathHandler, file_lock, get_cache_dir

from detectron2.utils.file_io import PathManager

from ..converters import yolact_converter as conv
from ..utils.atomic_io import atomic_open, atomic_write_bytes
from ..utils.errors import UserError, first_line
from .converted_files import load_checkpoint_file, save_converted_checkpoint
from .weights_catalog import PUBLISHED_WEIGHTS, SCHEME, UNSUPPORTED_WEIGHTS, PublishedWeights

__all__ = ["WeightsDownloadError", "cache_dir", "source_url", "cached_weights_path", "resolve_weights",
           "YolactWeightsHandler"]

logger = logging.getLogger(__name__)

CACHE_ENV = "YOLACT_D2_CACHE"
BASE_URL_ENV = "YOLACT_D2_WEIGHTS_URL"
TIMEOUT_S = 60.0  # longest wait for the server on one socket operation (connect, each read)
_CHUNK = 1 << 20
AUTHOR = "yolact_d2 yolact:// weights"


class WeightsDownloadError(UserError):
    """A ``yolact://`` file could not be downloaded, converted or verified."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_ENV) or os.path.join(get_cache_dir(), "yolact_d2"))


def source_url(weights: PublishedWeights) -> str:
    """The URL to download: the published one, or its path on ``$YOLACT_D2_WEIGHTS_URL``."""
    base = os.environ.get(BASE_URL_ENV)
    if not base:
        return weights.url
    return base.rstrip("/") + "/" + urlsplit(weights.url).path.lstrip("/")


def _lookup(name: str) -> PublishedWeights:
    if name in UNSUPPORTED_WEIGHTS:
        raise WeightsDownloadError(f"MODEL.WEIGHTS {SCHEME}{name}", f"not supported: {UNSUPPORTED_WEIGHTS[name]}")
    if name not in PUBLISHED_WEIGHTS:
        raise WeightsDownloadError(
            f"MODEL.WEIGHTS {SCHEME}{name}", "unknown name",
            fix="known: " + ", ".join(SCHEME + n for n in PUBLISHED_WEIGHTS),
        )
    return PUBLISHED_WEIGHTS[name]


def cached_weights_path(name: str) -> str:
    """Where the converted ``yolact://name`` is cached (whether it is there yet or not)."""
    _lookup(name)
    return os.path.join(cache_dir(), *name.split("/")) + ".pth"


def _download_path(weights: PublishedWeights) -> str:
    return os.path.join(cache_dir(), "downloads", weights.file_name)


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_sha256(path: str, digest: str) -> None:
    atomic_write_bytes(path + ".sha256", f"{digest}  {os.path.basename(path)}\n".encode())


def _recorded_sha256(path: str) -> Optional[str]:
    try:
        with open(path + ".sha256") as f:
            text = f.read().split()
    except FileNotFoundError:
        return None
    return text[0] if text else None


def _verify(path: str, recorded: str, what: str) -> None:
    actual = _sha256_of(path)
    if actual != recorded:
        raise WeightsDownloadError(
            path, f"sha256 {actual} differs from {recorded}, recorded in {path}.sha256 when it was {what}: the "
            "file changed or is damaged, so it was not loaded",
            fix=f"delete {path} and {path}.sha256 to download it again",
        )


def _offline_error(url: str, target: str, cause: str) -> WeightsDownloadError:
    return WeightsDownloadError(
        f"cannot download {url}", cause,
        fix=f"without network here, download that file elsewhere and put it at {target}; it is converted on first use",
    )


def _download(url: str, target: str) -> Tuple[str, int]:
    """Download ``url`` to ``target`` atomically; returns its sha256 and size."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with contextlib.closing(urllib.request.urlopen(url, timeout=TIMEOUT_S)) as response:
            expected = response.headers.get("Content-Length")
            logger.info(f"Downloading {url} ({_megabytes(expected)}) to {target}")
            with atomic_open(target, "wb") as f:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
                if expected is not None and int(expected) != size:
                    raise _offline_error(url, target, f"the connection ended after {size} of {expected} bytes")
    except urllib.error.HTTPError as e:
        raise _offline_error(url, target, f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:  # no route, DNS failure, connection refused
        raise _offline_error(url, target, first_line(e.reason) if isinstance(e.reason, BaseException)
                             else str(e.reason)) from None
    except (socket.timeout, TimeoutError) as e:
        raise _offline_error(url, target, f"no answer within {TIMEOUT_S:g} s ({first_line(e)})") from None
    except OSError as e:  # a reset connection
        raise _offline_error(url, target, first_line(e)) from None
    return digest.hexdigest(), size


def _megabytes(length: Optional[str]) -> str:
    return f"{int(length) / 1e6:.1f} MB" if length and length.isdigit() else "size unknown"


def _original_file(name: str, weights: PublishedWeights) -> str:
    """The published file in ``downloads/``: checked against its recorded sha256, downloaded if absent."""
    path = _download_path(weights)
    recorded = _recorded_sha256(path)
    if os.path.isfile(path):
        if recorded is not None:
            _verify(path, recorded, "downloaded")
        else:  # put there by hand (an offline machine): trusted on first use, as a download is
            digest = _sha256_of(path)
            _record_sha256(path, digest)
            logger.info(f"{SCHEME}{name}: using {path} (sha256 {digest}), put in the cache by hand")
        return path
    url = source_url(weights)
    digest, size = _download(url, path)
    _record_sha256(path, digest)
    logger.info(f"{SCHEME}{name}: downloaded {url} ({size / 1e6:.1f} MB, sha256 {digest}) to {path}")
    return path


def _convert(name: str, weights: PublishedWeights, source: str, target: str) -> None:
    try:
        checkpoint = load_checkpoint_file(source)  # safe loader: tensors and plain data only
        if weights.format == "torchvision":
            state_dict, depth = conv.convert_torchvision_resnet_state_dict(checkpoint)
            what = f"ImageNet ResNet-{depth} backbone"
        else:
            state_dict, info = conv.convert_yolact_state_dict(checkpoint, filename=weights.file_name)
            what = f"{info['variant']} {info['backbone']} with {info['num_classes']} classes"
    except ValueError as e:
        raise WeightsDownloadError(source, f"cannot be converted: {' '.join(str(e).split())}",
                                   fix=f"delete it to download {SCHEME}{name} again") from None
    save_converted_checkpoint(state_dict, target, AUTHOR)
    _record_sha256(target, _sha256_of(target))
    logger.info(f"{SCHEME}{name}: converted {source} ({what}, {len(state_dict)} tensors) to {target}")


def resolve_weights(name: str) -> str:
    """The local path of the converted ``yolact://name``: from the cache (its sha256 checked), else
    downloaded, converted and cached first. Processes that ask at once wait for one another."""
    weights = _lookup(name)
    target = cached_weights_path(name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with file_lock(target):
        recorded = _recorded_sha256(target)
        if os.path.isfile(target) and recorded is not None:
            _verify(target, recorded, "converted")
            logger.info(f"{SCHEME}{name}: cached {target} (from {weights.url})")
            return target
        _convert(name, weights, _original_file(name, weights), target)
    return target


class YolactWeightsHandler(PathHandler):
    """``yolact://NAME`` for iopath / Detectron2's ``PathManager``: a local, read-only file."""

    def _get_supported_prefixes(self):
        return [SCHEME]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        self._check_kwargs(kwargs)
        return resolve_weights(path[len(SCHEME):])

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        self._check_kwargs(kwargs)
        if any(c in mode for c in "wax+"):
            raise ValueError(f"{path}: yolact:// weights are read-only (mode {mode!r})")
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _isfile(self, path: str, **kwargs) -> bool:
        return path[len(SCHEME):] in PUBLISHED_WEIGHTS

    def _exists(self, path: str, **kwargs) -> bool:
        return self._isfile(path)


PathManager.register_handler(YolactWeightsHandler())
