"""Train and evaluate YOLACT with Detectron2: ``yolact-train`` (in a clone also ``python train_net.py``).

    yolact-train --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml
    yolact-train --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    yolact-train --config-file ... --num-gpus 2 [MODEL.DEVICE cpu]

A LazyConfig (``--config-file configs/.../x.py``) takes ``KEY=VALUE`` overrides, as Detectron2's
``tools/lazyconfig_train_net.py`` (``train.init_checkpoint=... train.max_iter=...``); ``--eval-only`` reads
``train.init_checkpoint`` (``random``: an untrained model on purpose).

Standard Detectron2 flags (``--resume``, ``--num-machines``, ``--machine-rank``, ``--dist-url``,
``KEY VALUE`` overrides) work as usual; ``--dist-timeout MINUTES`` bounds the wait for the other
machines. ``MODEL.WEIGHTS`` names the weights to start from: a file, ``yolact://NAME`` (downloaded once,
docs/MODEL_ZOO.md) or ``random`` (an untrained model on purpose; training and ``--eval-only`` refuse an empty
one). Own data: see ``DATASETS.COCO_INSTANCES`` in docs/GETTING_STARTED.md.
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

    from .. import YolactTrainer
    from ..data.datasets import register_datasets_from_config
    from ..demo.visualization import save_prediction_visualizations
    from ..engine.lazy_trainer import YolactLazyTrainer, build_lazy_model, lazy_dataset_names, lazy_test
    from ..engine.plot_metrics import plot_training_curves
    from ..engine.trainer import check_initial_weights
    from ..runtime.checkpointer import AtomicDetectionCheckpointer
    from ..runtime.cli_args import non_negative_int
    from ..runtime.command_line_keys import set_on_command_line
    from ..runtime.config_loading import is_lazy_config, load_lazy_config, setup_cfg
    from ..runtime.interrupt import launch_stoppable
    from ..runtime.launch import add_dist_timeout_argument, check_launch_arguments, launch_logging_rendezvous
    from ..runtime.reporting import run_cli
    from ..runtime.run_checks import check_class_names, check_num_classes, check_output_dir
    from ..runtime.run_lock import lock_output_dir, unlock_output_dir
    from ..runtime.safe_load import trusted_weights_file
    from ..runtime.weights_catalog import RANDOM_WEIGHTS, is_random_weights
    from ..utils.errors import ConfigError, UserError


def _resumable(cfg, args) -> bool:
    return bool(args.resume) and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def check_eval_weights(cfg, args) -> None:
    """--eval-only needs weights: an empty MODEL.WEIGHTS, or ``random`` from the config file (the synthetic
    config trains from scratch), would evaluate a random model and print AP tables."""
    if getattr(args, "random_weights", False):
        logging.getLogger("yolact_d2").warning("--eval-only with MODEL.WEIGHTS random: evaluating an untrained model")
    elif (not cfg.MODEL.WEIGHTS or is_random_weights(cfg.MODEL.WEIGHTS)) and not _resumable(cfg, args):
        said = "is empty" if not cfg.MODEL.WEIGHTS else f"is {RANDOM_WEIGHTS} (from {args.config_file})"
        raise ConfigError(
            f"--eval-only: MODEL.WEIGHTS {said}", "the model would be evaluated with random weights",
            fix="give MODEL.WEIGHTS path/to/model_final.pth, or --resume with a last_checkpoint in OUTPUT_DIR; "
            f"MODEL.WEIGHTS {RANDOM_WEIGHTS} on the command line evaluates an untrained model on purpose",
        )


def setup(args):
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)  # one-line errors (YAML syntax, unknown keys)
    # "MODEL.WEIGHTS random" on the command line: an untrained model on purpose, also for --eval-only
    args.random_weights = is_random_weights(cfg.MODEL.WEIGHTS) and set_on_command_line(cfg, "MODEL.WEIGHTS")
    register_datasets_from_config(cfg)
    cfg.freeze()
    check_output_dir(cfg)  # a clear error before default_setup opens log.txt there
    # one run per OUTPUT_DIR, before config.yaml and log.txt are written (the job's main process)
    local = cfg.OUTPUT_DIR and "://" not in cfg.OUTPUT_DIR
    takeover = lock_output_dir(cfg.OUTPUT_DIR) if local and comm.is_main_process() else None
    try:
        default_setup(cfg, args)
        # yolact_d2's own messages (skipped images, dropped annotations, ...) in the console and log.txt
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="yolact_d2")
    except BaseException:
        unlock_output_dir(cfg.OUTPUT_DIR)
        raise
    if takeover:
        logging.getLogger("yolact_d2").warning(takeover)
    return cfg


def setup_lazy(args):
    """A LazyConfig with its ``KEY=VALUE`` overrides; ``train.init_checkpoint=random`` as ``MODEL.WEIGHTS random``."""
    cfg = load_lazy_config(args.config_file, args.opts)
    weights = cfg.train.init_checkpoint
    args.random_weights = is_random_weights(weights)
    if args.random_weights:
        cfg.train.init_checkpoint = ""
    if args.num_vis > 0:
        raise ConfigError("--num-vis", "not available with a LazyConfig yet", fix="use the yaml twin of the config")
    output_dir = cfg.train.output_dir
    if output_dir:
        check_output_dir(_OutputDir(output_dir))  # a clear error before default_setup opens log.txt
    # one run per output folder, as for a yaml config
    local = output_dir and "://" not in output_dir
    takeover = lock_output_dir(output_dir) if local and comm.is_main_process() else None
    try:
        default_setup(cfg, args)  # reads train.output_dir, train.seed, train.cudnn_benchmark
        setup_logger(output_dir, distributed_rank=comm.get_rank(), name="yolact_d2")
    except BaseException:
        unlock_output_dir(output_dir)
        raise
    if takeover:
        logging.getLogger("yolact_d2").warning(takeover)
    return cfg


class _OutputDir:
    """``check_output_dir``'s view of a LazyConfig: its ``train.output_dir`` as ``OUTPUT_DIR``."""

    def __init__(self, output_dir):
        self.OUTPUT_DIR = output_dir


def main_lazy(args, start):
    """``main`` for a LazyConfig: the same steps through :class:`YolactLazyTrainer`."""
    cfg = setup_lazy(args)
    try:
        return train_or_evaluate_lazy(cfg, args, start)
    finally:
        unlock_output_dir(cfg.train.output_dir)


def train_or_evaluate_lazy(cfg, args, start):
    output_dir = cfg.train.output_dir
    test_names = lazy_dataset_names(cfg.dataloader.test) if "test" in cfg.dataloader else []
    if args.eval_only:
        resumable = args.resume and os.path.isfile(os.path.join(output_dir, "last_checkpoint"))
        if args.random_weights:
            logging.getLogger("yolact_d2").warning("--eval-only with train.init_checkpoint=random: an untrained model")
        elif not cfg.train.init_checkpoint and not resumable:
            raise ConfigError(
                "--eval-only: train.init_checkpoint is empty", "the model would be evaluated with random weights",
                fix="give train.init_checkpoint=path/to/model_final.pth, or --resume with a last_checkpoint in "
                "train.output_dir; train.init_checkpoint=random evaluates an untrained model on purpose",
            )
        model = build_lazy_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        results = lazy_test(cfg, model)
        if comm.is_main_process():
            print_summary(output_dir, test_names, results, time.perf_counter() - start)
        return results
    trainer = YolactLazyTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    if comm.is_main_process():
        print_summary(output_dir, test_names, results, time.perf_counter() - start, curves=plot_curves(output_dir))
    return results


def visualize(cfg, model, num_images):
    if num_images <= 0 or not cfg.DATASETS.TEST or not comm.is_main_process():
        return None
    out_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
    save_prediction_visualizations(cfg, model, cfg.DATASETS.TEST[0], out_dir, num_images)
    return os.path.abspath(out_dir)


def plot_curves(output_dir):
    """training_curves.png from metrics.json; a problem there is reported, not fatal after a training."""
    try:
        return os.path.abspath(plot_training_curves(output_dir)[0])
    except UserError as e:
        print(f"warning: no training curves: {e}")
        return None


def print_summary(output_dir, test_names, results, seconds, vis_dir=None, curves=None):
    """The last lines of the log: time, APs and where the outputs are."""
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"Time taken (setup, training, evaluation, visualisations): {minutes} min {secs:02d} s"]
    results = results or {}
    # DefaultTrainer.test returns {task: metrics} for one test set, {dataset: {task: metrics}} for several
    if "segm" in results or "bbox" in results:
        results = {test_names[0] if test_names else "the test set": results}
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
    metrics = os.path.join(output_dir, "metrics.json")
    if os.path.isfile(metrics):
        lines.append(f"Metrics: {os.path.abspath(metrics)}")
    print("\n".join(lines))


def main(args):
    start = time.perf_counter()
    if is_lazy_config(args.config_file):
        return main_lazy(args, start)
    cfg = setup(args)
    try:
        return train_or_evaluate(cfg, args, start)
    finally:
        unlock_output_dir(cfg.OUTPUT_DIR)


def train_or_evaluate(cfg, args, start):
    if args.eval_only:
        check_eval_weights(cfg, args)
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
        model = YolactTrainer.build_model(cfg)
        # Same checkpointer as training: clear errors for unreadable or mismatched weights.
        # inference mode: a checkpoint that leaves a layer uninitialised is an error (not a random class head)
        checkpointer = AtomicDetectionCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, trusted_file=trusted_weights_file(cfg), strict=True
        )
        weights = RANDOM_WEIGHTS if args.random_weights else cfg.MODEL.WEIGHTS
        extra = checkpointer.resume_or_load(weights, resume=args.resume) or {}
        check_class_names(extra.get("thing_classes"), f"the checkpoint {checkpointer.loaded_path}", cfg.DATASETS.TEST)
        results = YolactTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        vis_dir = visualize(cfg, model, args.num_vis)
        if comm.is_main_process():
            print_summary(cfg.OUTPUT_DIR, cfg.DATASETS.TEST, results, time.perf_counter() - start, vis_dir)
        return results

    if not _resumable(cfg, args):
        check_initial_weights(cfg)  # before the data is read; YolactTrainer.resume_or_load checks it too
    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    # DefaultTrainer.train returns the final evaluation only when TEST.EXPECTED_RESULTS is set
    results = results if results is not None else trainer.last_eval_results
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    vis_dir = visualize(cfg, model, args.num_vis)
    if comm.is_main_process():
        seconds = time.perf_counter() - start
        print_summary(cfg.OUTPUT_DIR, cfg.DATASETS.TEST, results, seconds, vis_dir, plot_curves(cfg.OUTPUT_DIR))
    return results


def get_parser():
    parser = default_argument_parser()
    add_dist_timeout_argument(parser)
    parser.add_argument("--num-vis", type=non_negative_int, default=0,
                        help="write PNGs of predictions on this many test images")
    return parser


def cli_main(argv=None, prog=None) -> int:
    """Parse the command line, train or evaluate under launch(), return the exit code."""
    parser = get_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    check_launch_arguments(parser, args)
    print("Command Line Args:", args)
    # Ctrl-C / SIGTERM / SIGHUP / SIGUSR1: checkpoint, --resume command, exit 128 + signal (docs/RELIABILITY.md)
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
