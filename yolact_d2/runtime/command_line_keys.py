"""Which config keys the user gave on the command line (``KEY VALUE`` overrides, or a tool's flag written
into the cfg). ``setup_cfg`` records them; the inference tools read them: a value the user chose is kept,
a value a config file brought may be replaced by what the checkpoint records (its class count) or is not
taken as an opt-in (``MODEL.WEIGHTS random`` of a config that trains from scratch)."""

__all__ = ["record_command_line_keys", "mark_set_on_command_line", "set_on_command_line"]

# Where setup_cfg records the keys given on the command line (KEY VALUE overrides), in the cfg
# object's attributes, not its keys (kept by clone(), not dumped to config.yaml).
_COMMAND_LINE_KEYS = "_yolact_d2_command_line_keys"


def record_command_line_keys(cfg, keys) -> None:
    cfg.__dict__[_COMMAND_LINE_KEYS] = frozenset(str(k) for k in keys)


def mark_set_on_command_line(cfg, key: str) -> None:
    """Record ``key`` as the user's own choice, e.g. a tool's ``--weights`` flag written into the cfg."""
    keys = cfg.__dict__.get(_COMMAND_LINE_KEYS)
    if keys is not None:
        record_command_line_keys(cfg, keys | {key})


def set_on_command_line(cfg, key: str) -> bool:
    """True if ``key`` was given as a ``KEY VALUE`` override, or if it is not known where ``cfg`` came
    from (a cfg not built by ``setup_cfg``: every key counts as the user's choice)."""
    keys = cfg.__dict__.get(_COMMAND_LINE_KEYS)
    return keys is None or key in keys
