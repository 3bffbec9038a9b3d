"""Value checks of config keys, for the ``from_config`` of the module that reads each key: a value
outside its range crashes deep in a run (``TEST.DETECTIONS_PER_IMAGE 0``: at the evaluation after
the whole training) or silently changes what the key means (a score threshold above 1 keeps no
detection), so the module that reads a key refuses it in one message naming the key instead."""
from typing import Dict

from ..utils.errors import ConfigError

__all__ = [
    "ValueRange", "FRACTION", "COUNT", "NON_NEGATIVE", "POSITIVE", "GROUP_NORM_GROUPS",
    "check_value_ranges", "check_group_norm_widths",
]


class ValueRange:
    """The values a numeric key may take: ``low`` / ``high`` bounds (None: unbounded), each inclusive
    unless ``open_low`` / ``open_high``; ``integer`` for counts."""

    def __init__(self, low=None, high=None, open_low=False, open_high=False, integer=False):
        self.low, self.high, self.open_low, self.open_high, self.integer = low, high, open_low, open_high, integer

    def admits(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low}"
        return f"{kind} {'<' if self.open_high else '<='} {self.high}"


FRACTION = ValueRange(0, 1)
COUNT = ValueRange(1, integer=True)
NON_NEGATIVE = ValueRange(0)
POSITIVE = ValueRange(0, open_low=True)

GROUP_NORM_GROUPS = 32  # Detectron2's get_norm("GN", C) is GroupNorm(32, C)


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def check_value_ranges(cfg, ranges: Dict[str, ValueRange]) -> None:
    """Every key of ``ranges`` that the config has holds a value (or list of values, checked entry by
    entry) in its range; a key the config does not have, or None (e.g. WEIGHT_DECAY_BIAS), is skipped."""
    for key, allowed in ranges.items():
        value = _lookup(cfg, key)
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in values if not allowed.admits(v)]
        if bad:
            entry = "" if values == [value] else f" (entry {bad[0]!r})"
            raise ConfigError(f"{key} {value!r}", f"must be {allowed}{entry}")


def check_group_norm_widths(norm_key: str, norm: str, widths: Dict[str, int]) -> None:
    """With ``norm`` (the value of ``norm_key``) "GN", every width of ``widths`` ({what it is: channels})
    divisible by the 32 groups, else GroupNorm's ValueError while the model is built, naming no key."""
    if norm != "GN":
        return
    for key, width in widths.items():
        if width % GROUP_NORM_GROUPS:
            raise ConfigError(
                f"{key} {width}", f"is not a multiple of the {GROUP_NORM_GROUPS} groups of {norm_key} 'GN'",
                fix=f"use a multiple of {GROUP_NORM_GROUPS}, or another {norm_key}",
            )
