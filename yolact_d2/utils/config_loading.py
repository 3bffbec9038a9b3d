"""Config files and command-line overrides with errors of one line (docs/RELIABILITY.md): an unknown
key names where it came from and the closest existing keys, a YAML syntax error names the file, the
line and the column. Used by train_net.py, demo/demo.py and tools/."""
import difflib
import os
from typing import Iterator, Sequence

import yaml

from .errors import ConfigError

__all__ = ["UnknownConfigKeyError", "merge_config_file", "merge_config_list"]


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


def _merge(cfg, merge, source: str) -> None:
    try:
        merge()
    except (KeyError, AssertionError) as e:
        message = e.args[0] if e.args else str(e)
        if not isinstance(message, str) or "Non-existent" not in message:
            raise
        key = message.split(":", 1)[1].strip()
        close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UnknownConfigKeyError(f"Non-existent config key: {key} (in {source}).{hint}") from None


def merge_config_file(cfg, path: str) -> None:
    """``cfg.merge_from_file(path)`` with one-line errors for a missing file, YAML syntax errors
    (file, line, column; also in a ``_BASE_`` file) and unknown keys."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config-file {path}", "no such file")
    try:
        _merge(cfg, lambda: cfg.merge_from_file(path), path)
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


def merge_config_list(cfg, opts: Sequence[str], source: str = "the command line") -> None:
    """``cfg.merge_from_list(opts)`` with a one-line error for unknown keys."""
    _merge(cfg, lambda: cfg.merge_from_list(list(opts)), source)
