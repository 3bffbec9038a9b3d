"""Reading a config file and its ``_BASE_`` chain without running anything from it
(docs/RELIABILITY.md, "Config files are data").

Detectron2's ``CfgNode.merge_from_file`` falls back to ``yaml.unsafe_load`` when a file holds a
tag such as ``!!python/object/apply:os.system``, which runs the named function; fvcore also fetches
``http(s)://`` ``_BASE_`` files. :func:`load_config_with_base` replaces its reading step:

* every file of the chain is read with a safe loader (plain YAML data only); a tag that names
  anything else is a :class:`~yolact_d2.utils.errors.ConfigError` naming the file, line and tag;
* the expansion of YAML aliases is bounded (:data:`MAX_EXPANDED_NODES`): a "billion laughs" file of
  a few hundred bytes would otherwise expand into gigabytes when the config is copied or printed;
* a ``_BASE_`` that is a URL (any ``scheme://``) is refused unless :data:`REMOTE_OPT_IN` is set in
  the environment; a downloaded file is read with the same safe loader;
* a ``_BASE_`` chain that comes back to a file already in it is one line naming the cycle.
"""
import os
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional

import yaml

from ..utils.errors import ConfigError

__all__ = ["load_config_with_base", "safe_load_config_text", "MAX_EXPANDED_NODES", "REMOTE_OPT_IN"]

BASE_KEY = "_BASE_"
# Environment variable that allows _BASE_ files given as URLs (they are downloaded and safe-loaded).
REMOTE_OPT_IN = "YOLACT_D2_ALLOW_REMOTE_CONFIG"
# Nodes of a file after its aliases are expanded. The bundled configs have a few hundred; a
# billion-laughs file of 430 bytes has ~10^9.
MAX_EXPANDED_NODES = 100_000
DOWNLOAD_TIMEOUT_S = 30  # a remote _BASE_ (opted in): seconds without an answer before giving up
MAX_REMOTE_BYTES = 1 << 20  # a remote _BASE_: larger is no config
MAX_BASE_DEPTH = 32  # _BASE_ files in one chain (the bundled configs use 2)
_YAML_TAG_PREFIX = "tag:yaml.org,2002:"


def _short_tag(tag: str) -> str:
    tag = str(tag)
    text = "!!" + tag[len(_YAML_TAG_PREFIX):] if tag.startswith(_YAML_TAG_PREFIX) else tag
    return text if len(text) <= 80 else text[:77] + "..."


def _expanded_size(root) -> Optional[int]:
    """Nodes of the tree under ``root`` with every alias expanded (linear time: shared nodes are
    counted once and multiplied), or None if an alias contains itself."""
    sizes: Dict[int, int] = {}
    on_path = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_EXPANDED_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            return None
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node) -> List[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document whose aliases expand beyond MAX_EXPANDED_NODES
    or refer to themselves, before any Python object is built from it."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            size = _expanded_size(node)
            if size is None:
                raise ConfigError("", "an alias (*name) refers to itself (a recursive structure)")
            if size > MAX_EXPANDED_NODES:
                raise ConfigError("", f"its aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values "
                                  "(a YAML 'billion laughs'); a config needs a few hundred")
        return node


def safe_load_config_text(stream, name: str) -> Any:
    """The YAML data in ``stream`` (text or a file), read safely; ``name`` is the file named in errors."""
    try:
        return yaml.load(stream, Loader=_BoundedSafeLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(name, e.cause) from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        tag = e.problem.split("tag", 1)[-1].strip(" '") if e.problem and "tag" in e.problem else "?"
        raise ConfigError(
            where, f"the tag {_short_tag(tag)} is not allowed: config files hold plain YAML data only "
            "(a Python tag would run code while the file is read), so it was not loaded",
            fix="remove the tag; write the value as a plain string, number, list or mapping",
        ) from None
    except RecursionError:
        raise ConfigError(name, "is nested too deeply to be a config") from None


def _is_url(path: str) -> bool:
    return "://" in path


def _download(url: str) -> str:
    """The text at ``url``: http(s) with a bounded wait and size, other schemes through Detectron2's
    PathManager (``detectron2://`` and the like)."""
    if urllib.parse.urlsplit(url).scheme.lower() in ("http", "https"):
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (opted in)
                data = response.read(MAX_REMOTE_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"_BASE_ {url:.200}", f"cannot be downloaded ({e})") from None
        if len(data) > MAX_REMOTE_BYTES:
            raise ConfigError(f"_BASE_ {url:.200}", f"is larger than {MAX_REMOTE_BYTES:,} bytes: not a config")
        return data.decode("utf-8", errors="replace")
    from detectron2.utils.file_io import PathManager

    with open(PathManager.get_local_path(url), encoding="utf-8") as f:
        return f.read(MAX_REMOTE_BYTES)


def _read(path: str) -> Any:
    if _is_url(path):
        return safe_load_config_text(_download(path), path)
    with open(path, encoding="utf-8") as f:
        return safe_load_config_text(f, path)


def _resolve(base: Any, parent: str) -> str:
    """Where ``_BASE_`` ``base`` of file ``parent`` is, as fvcore resolves it (relative to the
    folder of the file that names it)."""
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{parent}: _BASE_", f"must be a file name or a list of them, got {base!r:.60}")
    base = os.path.expanduser(base)
    if _is_url(base) or os.path.isabs(base):
        return base
    if _is_url(parent):
        return urllib.parse.urljoin(parent, base)
    return os.path.join(os.path.dirname(parent), base)


def not_a_mapping(data) -> str:
    """What a config file holds that is not a mapping: ``nothing (an empty file)``, ``a list``..."""
    name = type(data).__name__
    return "nothing (an empty file)" if data is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _merge_into(a: Dict, b: Dict, path: str) -> None:
    """Merge mapping ``a`` into ``b`` (values of ``a`` win), as fvcore merges a file over its base."""
    for key, value in a.items():
        if isinstance(value, dict) and key in b:
            if not isinstance(b[key], dict):
                raise ConfigError(f"{path}: {key}", "is a group of keys here but a value in its _BASE_")
            _merge_into(value, b[key], path)
        else:
            b[key] = value


def load_config_with_base(path: str, _chain: Optional[List[str]] = None) -> Dict[str, Any]:
    """The mapping of config keys in ``path`` merged over its ``_BASE_`` files (fvcore's
    ``load_yaml_with_base``, read safely; see the module docstring). Raises ConfigError; a missing
    file is FileNotFoundError (its ``filename`` set), a YAML syntax error is ``yaml.YAMLError``."""
    chain = list(_chain or [])
    identity = path if _is_url(path) else os.path.realpath(path)
    if identity in chain:
        names = [os.path.basename(p) for p in chain[chain.index(identity):]] + [os.path.basename(identity)]
        raise ConfigError(f"{chain[0]}", f"its _BASE_ chain is a cycle ({' -> '.join(names)})",
                          fix="remove the _BASE_ that names a file already in the chain")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(chain[0], f"its _BASE_ chain is more than {MAX_BASE_DEPTH} files deep")
    chain.append(identity)
    if not _is_url(path) and not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    data = _read(path)
    if not isinstance(data, dict):
        return data  # the caller names the file (empty, or not a mapping)
    if BASE_KEY not in data:
        return data
    bases = data.pop(BASE_KEY)
    merged: Dict[str, Any] = {}
    for base in bases if isinstance(bases, list) else [bases]:
        where = _resolve(base, path)
        if _is_url(where) and os.environ.get(REMOTE_OPT_IN, "") in ("", "0"):
            raise ConfigError(
                f"{path}: _BASE_ {where:.200}", "is a URL; remote config files are not loaded by default",
                fix=f"download it and name the local file, or set {REMOTE_OPT_IN}=1 to load it (read as plain data)",
            )
        loaded = load_config_with_base(where, chain)
        if not isinstance(loaded, dict):
            raise ConfigError(where, f"holds {not_a_mapping(loaded)}, not a mapping of config keys such as MODEL: ...")
        _merge_into(loaded, merged, path)
    _merge_into(data, merged, path)
    return merged
