"""Train and evaluate YOLACT with Detectron2: ``yolact-train`` (in a clone also ``python train_net.py``).

    yolact-train --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml
    yolact-train --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    yolact-train --config-file ... --num-gpus 2 [MODEL.DEVICE cpu]

Standard Detectron2 flags (``--resume``, ``--num-machines``, ``--machine-rank``, ``--dist-url``,
``KEY VALUE`` overrides) work as usual; ``--dist-timeout MINUTES`` bounds the wait for the other
machines. ``--eval-only`` needs ``MODEL.WEIGHTS`` (``MODEL.WEIGHTS random``: an untrained model on
purpose). Own data: see ``DATASETS.COCO_INSTANCES`` in docs/GETTING_STARTED.md.
"""
import functools
import logging
import os
import time
import warnings

# detectron2.engine decorates helpers with torch.jit.script, which torch >= 2.10 reports as deprecated
# on import; not actionable here. Scoped to these imports, as in yolact_d2/__init__.py.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    from detectron2.engine import default_argument_parser, default_setup
    from detectron2.evaluation import verify_results
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from yolact_d2 import YolactTrainer
    from yolact_d2.checkpoint import AtomicDetectionCheckpointer
    from yolact_d2.checkpoint.safe_load import trusted_weights_file
    from yolact_d2.config_checks import check_class_names, check_num_classes, check_output_dir
    from yolact_d2.data.datasets import register_datasets_from_config
    from yolact_d2.demo.visualization import save_prediction_visualizations
    from yolact_d2.engine.interrupt import launch_stoppable
    from yolact_d2.engine.launch import add_dist_timeout_argument, check_launch_arguments, launch_logging_rendezvous
    from yolact_d2.utils.config_loading import setup_cfg
    from yolact_d2.utils.errors import ConfigError, UserError, run_cli
    from yolact_d2.utils.plot_metrics import plot_training_curves

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
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)  # one-line errors (YAML syntax, unknown keys)
    # "MODEL.WEIGHTS random": random initialisation on purpose (--eval-only refuses empty weights)
    args.random_weights = cfg.MODEL.WEIGHTS == RANDOM_WEIGHTS and not os.path.exists(RANDOM_WEIGHTS)
    if args.random_weights:
        cfg.MODEL.WEIGHTS = ""
    register_datasets_from_config(cfg)
    cfg.freeze()
    check_output_dir(cfg)  # a clear error before default_setup opens log.txt there
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
        check_eval_weights(cfg, args)
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
        model = YolactTrainer.build_model(cfg)
        # Same checkpointer as training: clear errors for unreadable or mismatched weights.
        checkpointer = AtomicDetectionCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, trusted_file=trusted_weights_file(cfg)
        )
        extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume) or {}
        check_class_names(extra.get("thing_classes"), f"the checkpoint {checkpointer.loaded_path}", cfg.DATASETS.TEST)
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
    add_dist_timeout_argument(parser)
    parser.add_argument("--num-vis", type=int, default=0, help="write PNGs of predictions on this many test images")
    return parser


def cli_main(argv=None, prog=None) -> int:
    """Parse the command line, train or evaluate under launch(), return the exit code."""
    parser = get_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    check_launch_arguments(parser, args)
    print("Command Line Args:", args)
    # Ctrl-C / SIGTERM / SIGUSR1: checkpoint, --resume command, exit 128 + signal (docs/RELIABILITY.md)
    rendezvous = functools.partial(launch_logging_rendezvous, timeout_minutes=args.dist_timeout)  # --dist-timeout
    return run_cli(lambda: launch_stoppable(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        launch_fn=rendezvous,
    ))
