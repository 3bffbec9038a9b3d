#!/usr/bin/env python
"""Train and evaluate YOLACT with Detectron2.

    python train_net.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file ... --num-gpus 2 [MODEL.DEVICE cpu]

Standard Detectron2 flags (``--resume``, ``--num-machines``, ``--machine-rank``, ``--dist-url``,
``KEY VALUE`` overrides) work as usual. Own data: see ``DATASETS.COCO_INSTANCES`` in docs/GETTING_STARTED.md.
"""
import difflib
import os
import sys

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from yolact_d2 import YolactTrainer, add_yolact_config
from yolact_d2.checkpoint import AtomicDetectionCheckpointer
from yolact_d2.checkpoint.safe_load import trusted_weights_file
from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.engine.interrupt import launch_stoppable
from yolact_d2.utils.errors import run_cli
from yolact_d2.utils.visualization import save_prediction_visualizations


def _all_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _all_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _merge(cfg, merge, source):
    """``merge()`` (a yacs merge); an unknown key becomes a KeyError naming the key, where it came
    from and the closest existing keys."""
    try:
        merge()
    except (KeyError, AssertionError) as e:
        message = e.args[0] if e.args else str(e)
        if not isinstance(message, str) or "Non-existent" not in message:
            raise
        key = message.split(":", 1)[1].strip()
        close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise KeyError(f"Non-existent config key: {key} (in {source}).{hint}") from None


def setup(args):
    cfg = get_cfg()
    add_yolact_config(cfg)
    _merge(cfg, lambda: cfg.merge_from_file(args.config_file), args.config_file)
    _merge(cfg, lambda: cfg.merge_from_list(args.opts), "the command line")
    register_datasets_from_config(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    # yolact_d2's own messages (skipped images, dropped annotations, ...) in the console and log.txt
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="yolact_d2")
    return cfg


def visualize(cfg, model, num_images):
    if num_images <= 0 or not cfg.DATASETS.TEST or not comm.is_main_process():
        return
    out_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
    save_prediction_visualizations(cfg, model, cfg.DATASETS.TEST[0], out_dir, num_images)
    print(f"Visualisations of predictions (ground truth | prediction): {os.path.abspath(out_dir)}")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = YolactTrainer.build_model(cfg)
        # Same checkpointer as training: clear errors for unreadable or mismatched weights.
        checkpointer = AtomicDetectionCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, trusted_file=trusted_weights_file(cfg)
        )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = YolactTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        visualize(cfg, model, args.num_vis)
        return results

    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    visualize(cfg, model, args.num_vis)
    if comm.is_main_process():
        print(f"Metrics: {os.path.abspath(os.path.join(cfg.OUTPUT_DIR, 'metrics.json'))}")
    return results


def get_parser():
    parser = default_argument_parser()
    parser.add_argument("--num-vis", type=int, default=0, help="write PNGs of predictions on this many test images")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    # Ctrl-C / SIGTERM / SIGUSR1: checkpoint, --resume command, exit 128 + signal (docs/RELIABILITY.md)
    sys.exit(run_cli(lambda: launch_stoppable(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )))
