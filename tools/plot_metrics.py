#!/usr/bin/env python
"""Training curves of a Detectron2 run: loss terms and LR against the iteration.

    python tools/plot_metrics.py OUTPUT_DIR [--out PNG]

Reads ``OUTPUT_DIR/metrics.json`` and writes ``OUTPUT_DIR/training_curves.png`` (or ``--out``).
``train_net.py`` writes the same picture at the end of every training.
"""
import argparse
import sys


def main(argv=None):
    from yolact_d2.engine.plot_metrics import plot_training_curves
    from yolact_d2.runtime.reporting import add_debug_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a training's OUTPUT_DIR (the folder holding metrics.json)")
    parser.add_argument("--out", default=None, help="PNG to write (default OUTPUT_DIR/training_curves.png)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    path, series = plot_training_curves(args.output_dir, args.out)
    iterations = max((its[-1] for its, _ in series.values()), default=0)
    print(f"wrote {path} ({', '.join(sorted(series))}; up to iteration {iterations})")


if __name__ == "__main__":
    from yolact_d2.runtime.reporting import run_cli

    sys.exit(run_cli(main))
