"""Config files and command-line overrides with errors of one line (docs/RELIABILITY.md): an unknown
key names where it came from and the closest existing keys, a YAML syntax error names the file, the
line and the column. :func:`setup_cfg` is how train_net.py, demo/, tools/ and the tests build a config."""
import difflib
import os
import re
from typing import Iterator, Optional, Sequence

import yaml

from ..config import add_yolact_config
from ..utils.detectron2_internals import (
    config_file_version,
    merge_config_of_version,
    yacs_invalid_value,
    yacs_type_mismatch,
    yacs_unknown_key,
)
from ..utils.errors import ConfigError, first_line
from ..utils.file_checks import unreadable_file_cause
from .command_line_keys import record_command_line_keys
from .config_yaml import load_config_with_base, not_a_mapping, safe_load_config_text

__all__ = [
    "UnknownConfigKeyError", "merge_config_file", "merge_config_list", "setup_cfg", "is_lazy_config",
    "load_lazy_config",
]


class UnknownConfigKeyError(ConfigError, KeyError):
    """A key that the config does not have (a KeyError too, as yacs raises for files)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return ConfigError.__str__(self)


def _all_keys(node, prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _all_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _merge(cfg, merge, source: str) -> None:
    try:
        merge()
    except ValueError as e:  # yacs: a value of another type than the key's default
        mismatch = yacs_type_mismatch(e)
        if mismatch is None:
            raise
        key, want, got, default, value = mismatch
        if "CfgNode" in (want, got):  # a value where a group of keys belongs, or the other way round
            held = f"a group of keys ({key}.*)" if want == "CfgNode" else f"a value ({_short(default)})"
            raise ConfigError(
                f"{key} (in {source})", f"given {'a group of keys' if got == 'CfgNode' else _short(value)}, but it is "
                f"{held}", fix="check the indentation there" if os.path.isfile(source) else f"set {key}.KEY VALUE",
            ) from None
        raise ConfigError(
            f"{key} {_short(value)} (in {source})",
            f"type {got}, but the key holds type {want} (currently {_short(default)})",
        ) from None
    except (KeyError, AssertionError) as e:
        key = yacs_unknown_key(e)
        if key is None:
            raise
        close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        # one part: yacs' own words ("Non-existent config key: KEY"), which users search for, then where and the hint
        raise UnknownConfigKeyError(f"Non-existent config key: {key} (in {source}).{hint}") from None


def _merge_from_file_safely(cfg, path: str) -> None:
    """Detectron2's ``cfg.merge_from_file(path)``, with the file and its ``_BASE_`` chain read by
    :func:`~yolact_d2.runtime.config_yaml.load_config_with_base` (plain YAML data only, bounded,
    no remote files unless allowed) instead of fvcore's loader, which falls back to ``yaml.unsafe_load``;
    then merged as Detectron2 merges a file (an older config VERSION upgraded)."""
    data = load_config_with_base(path)
    if not isinstance(data, dict):
        _raise_if_not_a_mapping(path)
    try:
        loaded = type(cfg)(data)
    except AssertionError as e:  # yacs: a value of a type a config cannot hold (a date, a set, bytes)
        message = yacs_invalid_value(e)
        if message is None:
            raise
        raise ConfigError(
            f"{path}", f"{_short(message, 160)}",
            fix="write a number, a string, a boolean, a list or a group of keys there (quote a date)",
        ) from None
    version = config_file_version(loaded, path)
    if version > cfg.VERSION:
        raise ConfigError(
            f"{path}: VERSION {version}", f"is newer than this Detectron2's config version {cfg.VERSION}",
            fix="use a config written for this Detectron2, or a newer Detectron2",
        )
    merge_config_of_version(cfg, loaded, version)


def merge_config_file(cfg, path: str) -> None:
    """``cfg.merge_from_file(path)`` read safely (:func:`_merge_from_file_safely`), with one-line
    errors for a missing file, YAML syntax errors (file, line, column; also in a ``_BASE_`` file),
    Python tags, alias bombs, ``_BASE_`` cycles and URLs, and unknown keys."""
    if not os.path.isfile(path):
        cause = unreadable_file_cause(path)  # a FIFO, a link loop, a folder...
        raise ConfigError(f"--config-file {path}", "no such file" if cause in (None, "does not exist") else cause)
    try:
        _merge(cfg, lambda: _merge_from_file_safely(cfg, path), path)
    except FileNotFoundError as e:  # a _BASE_ that does not exist
        raise ConfigError(f"{path}", f"its _BASE_ chain names {e.filename}, which does not exist") from None
    except (AttributeError, TypeError):  # Detectron2 / yacs on a file that is not a mapping of keys
        _raise_if_not_a_mapping(path)
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if mark is None:
            raise ConfigError(f"{path}", f"invalid YAML: {problem}") from e
        name = mark.name if mark.name and not mark.name.startswith("<") else path
        raise ConfigError(
            f"{name}:{mark.line + 1}:{mark.column + 1}", f"invalid YAML: {problem}",
            fix="check the quotes, brackets and indentation there",
        ) from e


def _raise_if_not_a_mapping(path: str) -> None:
    """A :class:`ConfigError` naming the file of ``path``'s ``_BASE_`` chain (resolved as Detectron2
    does: relative to the file that names it) whose YAML is empty or not a mapping of config keys."""
    seen = set()
    while path not in seen and os.path.isfile(path):
        seen.add(path)
        with open(path) as f:
            data = safe_load_config_text(f, path)
        if not isinstance(data, dict):
            what = not_a_mapping(data)
            raise ConfigError(f"{path}", f"holds {what}, not a mapping of config keys such as MODEL: ...") from None
        base = data.get("_BASE_")
        if not isinstance(base, str) or "://" in base:
            return
        base = os.path.expanduser(base)
        path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)


_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")  # the spelling of a config key: MODEL.YOLACT.NUM_CLASSES


def _check_pairs(opts: Sequence, source: str) -> None:
    """yacs asserts an even count with no message; a shell argument holding a key and its value
    (``"SOLVER.STEPS (1120,)"``) is the usual cause, so name it when there is one."""
    if len(opts) % 2 == 0:
        return
    joined = [o for o in opts if isinstance(o, str) and len(o.split(None, 1)) == 2 and _KEY.fullmatch(o.split()[0])]
    if joined:
        key, value = joined[0].split(None, 1)
        raise ConfigError(
            f"{source}: {joined[0]!r}", "a key and its value in one item; overrides are KEY VALUE pairs",
            fix=f"give them as two items: {key} {value!r}",
        )
    raise ConfigError(
        f"{source}: {opts[-1]!r}", f"no value: overrides are KEY VALUE pairs, got {len(opts)} items",
        fix="give a value after each key",
    )


def merge_config_list(cfg, opts: Sequence[str], source: str = "the command line") -> None:
    """``cfg.merge_from_list(opts)`` with one-line errors for unknown keys and an odd number of items."""
    _check_pairs(opts, source)
    _merge(cfg, lambda: cfg.merge_from_list(list(opts)), source)


def setup_cfg(config_file: Optional[str] = None, opts: Sequence = (), freeze: bool = True):
    """Detectron2's default config with the yolact_d2 keys, then ``config_file`` and the ``KEY VALUE``
    overrides ``opts``, with the one-line errors above; frozen unless the caller still sets keys."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_yolact_config(cfg)
    if config_file is not None:
        merge_config_file(cfg, config_file)
    merge_config_list(cfg, opts)
    record_command_line_keys(cfg, list(opts)[0::2])  # the inference tools' class count: YolactPredictor
    if freeze:
        cfg.freeze()
    return cfg


def is_lazy_config(path: Optional[str]) -> bool:
    """A LazyConfig (a Python file: ``configs/**/*.py``) rather than a yaml config."""
    return bool(path) and str(path).endswith(".py")


def load_lazy_config(path: str, overrides: Sequence[str] = ()):
    """``LazyConfig.load(path)`` and the ``KEY=VALUE`` overrides (as Detectron2's lazyconfig_train_net.py),
    with one-line errors. Unlike Detectron2's ``apply_overrides``, which creates a key it does not know, an
    override of a key the config does not have is an error naming it (a typo would otherwise change nothing)."""
    from omegaconf import OmegaConf

    from detectron2.config import LazyConfig

    if not os.path.isfile(path):
        raise ConfigError(f"--config-file {path}", "no such file")
    try:
        cfg = LazyConfig.load(path)
    except SyntaxError as e:
        raise ConfigError(f"--config-file {path}", f"Python syntax error at line {e.lineno}: {e.msg}") from None
    except (ImportError, NameError, AttributeError, KeyError, TypeError) as e:
        raise ConfigError(f"--config-file {path}", f"{type(e).__name__}: {e}") from None
    missing = object()
    for item in overrides:
        key, sep, _ = str(item).partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} on the command line", "a LazyConfig takes KEY=VALUE overrides")
        if OmegaConf.select(cfg, key.strip(), default=missing) is missing:
            parent = key.strip().rpartition(".")[0]
            node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
            known = list(node.keys()) if hasattr(node, "keys") else []
            close = difflib.get_close_matches(key.strip().rpartition(".")[2], [str(k) for k in known], n=3)
            raise UnknownConfigKeyError(
                f"override {key.strip()!r} on the command line", f"{path} has no such key"
                + (f" (did you mean {', '.join(f'{parent}.{c}' if parent else c for c in close)}?)" if close else "")
            )
    try:
        return LazyConfig.apply_overrides(cfg, list(overrides))
    except Exception as e:  # omegaconf / hydra parse errors of the value
        raise ConfigError(f"overrides {list(overrides)}", f"{type(e).__name__}: {first_line(e)}") from None
