"""Training curves from Detectron2's ``metrics.json``: the loss terms and the learning rate
against the iteration, as one PNG (``training_curves.png``), for any ``OUTPUT_DIR``.

Detectron2's JSONWriter appends one JSON object per line; training lines carry ``iteration``,
the loss terms (``total_loss``, ``loss_*``) and ``lr``; evaluation lines carry ``bbox/AP`` etc.
and are ignored here. ``tools/plot_metrics.py`` is the command-line front end; ``train_net.py``
calls :func:`plot_training_curves` at the end of training.
"""
import json
import os
from typing import Dict, List, Tuple

from ..utils.errors import DataError

__all__ = ["load_metrics", "training_series", "plot_training_curves", "CURVES_FILE_NAME"]

CURVES_FILE_NAME = "training_curves.png"
Series = Dict[str, Tuple[List[int], List[float]]]


def load_metrics(path: str) -> List[dict]:
    """The records of a ``metrics.json`` (one JSON object per line); a clear DataError naming the
    file when it is missing, unreadable, has a line that is not a JSON object, or has no record."""
    if not os.path.isfile(path):
        raise DataError(path, "no such file", "train first, or pass the OUTPUT_DIR of a Detectron2 training")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {number}", f"not JSON ({e.msg})",
                                "expected Detectron2's metrics.json: one JSON object per line") from None
            except RecursionError:  # json's decoder recurses once per level of nesting
                raise DataError(f"{path}, line {number}", "nested too deeply for Python's json reader",
                                "expected Detectron2's metrics.json: one JSON object per line") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}", "not a JSON object",
                                "expected Detectron2's metrics.json: one JSON object per line")
            records.append(record)
    if not records:
        raise DataError(path, "no records", "the training wrote no metrics yet")
    return records


def training_series(records: List[dict]) -> Series:
    """``{name: (iterations, values)}`` for ``total_loss``, every ``loss_*`` term and ``lr``, in
    iteration order; a later record of the same iteration (a resumed run) replaces the earlier."""
    by_iter: Dict[str, Dict[int, float]] = {}
    for record in records:
        iteration = record.get("iteration")
        if not isinstance(iteration, int):
            continue
        for key, value in record.items():
            if (key == "total_loss" or key.startswith("loss_") or key == "lr") and isinstance(value, (int, float)):
                by_iter.setdefault(key, {})[iteration] = float(value)
    return {k: (sorted(v), [v[i] for i in sorted(v)]) for k, v in by_iter.items()}


def plot_training_curves(output_dir: str, out_path: str = None) -> Tuple[str, Series]:
    """Write the loss terms (top, log scale) and the LR (bottom) of ``output_dir/metrics.json``
    to ``out_path`` (default ``output_dir/training_curves.png``). Returns the PNG path and the
    plotted series."""
    metrics_path = os.path.join(output_dir, "metrics.json")
    series = training_series(load_metrics(metrics_path))
    losses = {k: v for k, v in series.items() if k != "lr"}
    if not losses:
        raise DataError(metrics_path, "no loss values with an iteration", "is this a training's metrics.json?")
    import matplotlib

    matplotlib.use("Agg")  # no display needed; a no-op if a non-interactive backend is already in use
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name in sorted(losses, key=lambda k: (k != "total_loss", k)):
        iterations, values = losses[name]
        ax_loss.plot(iterations, values, label=name, linewidth=2.0 if name == "total_loss" else 1.2)
    if all(v > 0 for _, values in losses.values() for v in values):
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss (median over the logging window)")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(True, alpha=0.3)
    ax_loss.set_title(os.path.basename(os.path.abspath(output_dir)) + ": training curves")
    if "lr" in series:
        ax_lr.plot(*series["lr"], color="black")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("iteration")
    ax_lr.grid(True, alpha=0.3)
    fig.tight_layout()
    out_path = out_path or os.path.join(output_dir, CURVES_FILE_NAME)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path, series
