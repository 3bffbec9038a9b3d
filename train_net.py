#!/usr/bin/env python
"""Train and evaluate YOLACT with Detectron2.

    python train_net.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file ... --num-gpus 2 [MODEL.DEVICE cpu]

Standard Detectron2 flags (``--resume``, ``--num-machines``, ``--machine-rank``, ``--dist-url``,
``KEY VALUE`` overrides) work as usual; ``--dist-timeout MINUTES`` bounds the wait for the other
machines. ``--eval-only`` needs ``MODEL.WEIGHTS`` (``MODEL.WEIGHTS random``: an untrained model on
purpose). Own data: see ``DATASETS.COCO_INSTANCES`` in docs/GETTING_STARTED.md.
"""
import functools
import logging
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
from yolact_d2.engine.launch import add_dist_timeout_argument, launch_logging_rendezvous
from yolact_d2.engine.trainer import check_num_classes
from yolact_d2.utils.config_loading import merge_config_file, merge_config_list
from yolact_d2.utils.errors import ConfigError, run_cli
from yolact_d2.utils.visualization import save_prediction_visualizations

RANDOM_WEIGHTS = "random"  # MODEL.WEIGHTS value that asks for a randomly initialised model


def check_eval_weights(cfg, args) -> None:
    """--eval-only needs weights: an empty MODEL.WEIGHTS would evaluate a random model and print AP tables."""
    resumable = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if getattr(args, "random_weights", False):
        logging.getLogger("yolact_d2").warning("--eval-only with MODEL.WEIGHTS random: evaluating an untrained model")
    elif not cfg.MODEL.WEIGHTS and not resumable:
        raise ConfigError(
            "--eval-only: MODEL.WEIGHTS is empty", "the model would be evaluated with random weights",
            fix="give MODEL.WEIGHTS path/to/model_final.pth, or --resume with a last_checkpoint in OUTPUT_DIR; "
            "MODEL.WEIGHTS random evaluates an untrained model on purpose",
        )


def setup(args):
    cfg = get_cfg()
    add_yolact_config(cfg)
    merge_config_file(cfg, args.config_file)  # one-line errors: YAML syntax (file:line:column), unknown keys
    merge_config_list(cfg, args.opts)
    # "MODEL.WEIGHTS random": random initialisation on purpose (--eval-only refuses empty weights)
    args.random_weights = cfg.MODEL.WEIGHTS == RANDOM_WEIGHTS and not os.path.exists(RANDOM_WEIGHTS)
    if args.random_weights:
        cfg.MODEL.WEIGHTS = ""
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
        check_eval_weights(cfg, args)
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
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
    add_dist_timeout_argument(parser)
    parser.add_argument("--num-vis", type=int, default=0, help="write PNGs of predictions on this many test images")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    # Ctrl-C / SIGTERM / SIGUSR1: checkpoint, --resume command, exit 128 + signal (docs/RELIABILITY.md)
    rendezvous = functools.partial(launch_logging_rendezvous, timeout_minutes=args.dist_timeout)  # --dist-timeout
    sys.exit(run_cli(lambda: launch_stoppable(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        launch_fn=rendezvous,
    )))
