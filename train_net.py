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
import time

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from yolact_d2 import YolactTrainer, add_yolact_config
from yolact_d2.checkpoint import AtomicDetectionCheckpointer
from yolact_d2.checkpoint.safe_load import trusted_weights_file
from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.utils.errors import UserError, run_cli
from yolact_d2.utils.plot_metrics import plot_training_curves
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
        return None
    out_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
    save_prediction_visualizations(cfg, model, cfg.DATASETS.TEST[0], out_dir, num_images)
    return os.path.abspath(out_dir)


def plot_curves(cfg):
    """training_curves.png from metrics.json; a problem there is reported, not fatal after a training."""
    try:
        return os.path.abspath(plot_training_curves(cfg.OUTPUT_DIR)[0])
    except UserError as e:
        print(f"warning: no training curves: {e}")
        return None


def print_summary(cfg, results, seconds, vis_dir=None, curves=None):
    """The last lines of the log: time, APs and where the outputs are."""
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"Time taken (setup, training, evaluation, visualisations): {minutes} min {secs:02d} s"]
    results = results or {}
    # DefaultTrainer.test returns {task: metrics} for one test set, {dataset: {task: metrics}} for several
    if "segm" in results or "bbox" in results:
        results = {cfg.DATASETS.TEST[0]: results}
    for name, res in results.items():
        if not isinstance(res, dict):
            continue
        aps = [f"{label} AP {res[task]['AP']:.1f}" for task, label in (("segm", "mask"), ("bbox", "box"))
               if task in res and "AP" in res[task]]
        lines.append(f"{', '.join(aps)} on {name}" if aps else f"no AP on {name}")
    if vis_dir:
        lines.append(f"Visualisations of predictions (ground truth | prediction): {vis_dir}")
    if curves:
        lines.append(f"Training curves: {curves}")
    metrics = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
    if os.path.isfile(metrics):
        lines.append(f"Metrics: {os.path.abspath(metrics)}")
    print("\n".join(lines))


def main(args):
    start = time.perf_counter()
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
        vis_dir = visualize(cfg, model, args.num_vis)
        if comm.is_main_process():
            print_summary(cfg, results, time.perf_counter() - start, vis_dir)
        return results

    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    # DefaultTrainer.train returns the final evaluation only when TEST.EXPECTED_RESULTS is set
    results = results if results is not None else getattr(trainer, "_last_eval_results", None)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    vis_dir = visualize(cfg, model, args.num_vis)
    if comm.is_main_process():
        print_summary(cfg, results, time.perf_counter() - start, vis_dir, plot_curves(cfg))
    return results


def get_parser():
    parser = default_argument_parser()
    parser.add_argument("--num-vis", type=int, default=0, help="write PNGs of predictions on this many test images")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    sys.exit(run_cli(lambda: launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )))
