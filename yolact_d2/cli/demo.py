"""Run a YOLACT model on images, a video or a webcam and draw the instances: ``yolact-demo`` (in a
clone also ``python demo/demo.py``); ``--help`` gives the inputs, outputs and exit statuses. The logic
is in :mod:`yolact_d2.demo`, laid out as Detectron2's demo (a visualising predictor, the input
handling and the loops); this file is the command line."""
import argparse
import logging
import os
import warnings

from .. import demo as demo_lib
from ..runtime.config_loading import setup_cfg as load_cfg
from ..runtime.reporting import run_cli

logger = logging.getLogger("yolact_demo")

EPILOG = """
Runs on CPU with '--opts MODEL.DEVICE cpu' (the config default is cuda).

Weights: MODEL.WEIGHTS is required ('MODEL.WEIGHTS random': an untrained model on purpose). The
class count and names come from the checkpoint unless MODEL.YOLACT.NUM_CLASSES is given in --opts;
the config that fits a run's checkpoints is that run's OUTPUT_DIR/config.yaml.

Outputs:
  images: --output is a folder for several inputs, a folder or a glob (one <name>.png per
          input, <name>_<ext>.png when two inputs share a name); for a single file it is the PNG
          path if it has an image extension (its folder is created), else a folder. Folders
          (.jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp directly inside) and globs are sorted.
          Unreadable files are logged and skipped; the run ends with a count of succeeded and
          failed images, exit status 1 if any failed or none was found.
  video:  --output is the .mp4 to write (mp4v), or a folder (existing or ending with '/';
          <video name>.mp4 inside); a video that cannot be opened is exit status 1. Masks,
          class names and scores are drawn with colours kept across frames, no boxes.
  none:   without --output results are shown in a window (needs a display, else a usage error
          asking for --output; ESC quits). --webcam always shows a window.

--confidence-threshold is also used as MODEL.YOLACT.SCORE_THRESH_TEST (overriding the config
and --opts), which gives the same detections above the threshold as thresholding afterwards
(yolact_d2/demo/predictor.py). '--opts MODEL.YOLACT.PRECISION_TEST bf16' runs the network in bf16
('auto': bf16 on CPUs with AMX or AVX512-BF16, else fp32; yolact_d2/precision.py).
Exit status: 0 success, 1 some input failed, 2 usage error.

examples (yolact-demo is the installed command; in a clone also python demo/demo.py):
  yolact-demo --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
      --input images/ --output vis/ --opts MODEL.WEIGHTS output/model_final.pth MODEL.DEVICE cpu
  yolact-demo --config-file CONFIG --video-input in.mp4 --output out.mp4 \\
      --opts MODEL.WEIGHTS model.pth
"""


def get_parser(prog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="YOLACT instance segmentation demo (Detectron2 plugin yolact_d2): draws the "
        "masks, boxes, class names and scores of the detections on images, a video or a webcam.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a yolact_d2 config file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", metavar="PATH",
        help="image files, glob patterns (quote them) or folders (all images directly inside)",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="use the webcam (device 0); ESC quits")
    parser.add_argument(
        "--output", metavar="PATH",
        help="output PNG file or folder (images), .mp4 file (video); if omitted, show in a window",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.3, metavar="T",
        help="show / save the detections scoring more than T (also sets "
        "MODEL.YOLACT.SCORE_THRESH_TEST); default: %(default)s",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu (must come last)",
    )
    return parser


def setup_cfg(args):
    cfg = load_cfg(args.config_file, args.opts, freeze=False)  # one-line errors (YAML syntax, unknown keys)
    if cfg.MODEL.YOLACT.SCORE_THRESH_TEST != args.confidence_threshold:
        logger.info(
            f"MODEL.YOLACT.SCORE_THRESH_TEST: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST} -> "
            f"{args.confidence_threshold} (--confidence-threshold)"
        )
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


def _check_usage(parser, args, open_window) -> None:
    """Usage errors (exit status 2), before the model is built."""
    if not 0.0 <= args.confidence_threshold <= 1.0:
        parser.error(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    if len(args.opts) % 2:
        parser.error(f"--opts needs KEY VALUE pairs, got an odd number of items: {args.opts}")
    if args.webcam and args.output:
        parser.error("--webcam only shows the frames in a window; --output is not supported with it")
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.output is None and not open_window():
        parser.error("no display available to show the results: pass --output to write them to files")


def _setup_logging(args) -> None:
    from detectron2.utils.logger import setup_logger

    setup_logger(name="fvcore")
    setup_logger()
    setup_logger(name="yolact_d2")
    setup_logger(name=logger.name, abbrev_name="demo")
    logger.info(f"Arguments: {args}")


def main(argv=None, prog=None) -> int:
    parser = get_parser(prog)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    from tqdm.contrib.logging import logging_redirect_tqdm

    _check_usage(parser, args, demo_lib.open_window)
    _setup_logging(args)
    if args.input:
        paths, missing, several = demo_lib.collect_images(args.input)
        outputs = demo_lib.plan_image_outputs(paths, several, args.output, parser.error)
        if not paths:
            logger.error("No image to process")
            return 1
    elif args.video_input:
        video_output = demo_lib.plan_video_output(args.video_input, args.output, parser.error)
        probe = demo_lib.open_video(args.video_input)  # fail before building the model
        if probe is None:
            return 1
        probe.release()

    cfg = setup_cfg(args)
    demo = demo_lib.VisualizationDemo(cfg, args.confidence_threshold)  # class names: resolve_metadata
    console_loggers = [logging.getLogger(n) for n in (logger.name, "detectron2", "fvcore", "yolact_d2")]
    with logging_redirect_tqdm(loggers=console_loggers):
        if args.input:
            status = demo_lib.run_images(demo, paths, missing, outputs)
        elif args.video_input:
            status = demo_lib.run_video(demo, args.video_input, video_output)
        else:
            status = demo_lib.run_webcam(demo)
    if args.output is None:
        import cv2

        cv2.destroyAllWindows()
    return status


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
