#!/usr/bin/env python3
"""Run a YOLACT model on images, a video or a webcam and draw the instances.

Examples (CPU: add ``--opts MODEL.DEVICE cpu``)::

    python demo/demo.py --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
        --input photos/ --output vis/ --opts MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output clip_vis.mp4 \\
        --opts MODEL.WEIGHTS model_final.pth

Behaviour (also in ``--help``):

* ``--confidence-threshold T`` keeps the final detections with ``score > T``. It is also
  written into ``MODEL.YOLACT.SCORE_THRESH_TEST`` (overriding the config file and ``--opts``).
  The model applies that threshold (also ``> T``) before NMS to each anchor's best class score,
  and neither the NMS (a box is only ever suppressed by higher-scoring boxes) nor the per-class
  top-k / max-detection cuts (which keep the highest scores) let a box scoring T or less change
  what happens to a box scoring more, so the detections shown are exactly those the config's own
  threshold would give after filtering (``score > T``): less work when T is higher than the
  config's value, and the low-scoring detections are available when T is lower.
* Images (``--input``): files, glob patterns and folders (every .jpg/.jpeg/.png/.bmp/.tif/.tiff/
  .webp file directly in the folder, sorted). With several inputs, a folder or a glob,
  ``--output`` is a folder (created if needed) receiving one ``<input name>.png`` per image
  (``<name>_<ext>.png`` when two inputs share a name). With one file, ``--output`` is the PNG
  path if it ends with an image extension (its folder is created if needed), else a folder.
  Unreadable or missing inputs are
  logged with their path and skipped; the run ends with a count of succeeded / failed images
  and exits with status 1 if any failed (or if no image was found), 0 otherwise.
* Video (``--video-input``): ``--output`` is the .mp4 file to write (mp4v codec), or a folder
  (existing, or ending with a path separator; ``<video name>.mp4`` inside). A video that cannot
  be opened exits with status 1.
  Detectron2's ``VideoVisualizer`` draws masks, class names and scores, with colours kept across
  frames; like Detectron2's own video demo it does not draw boxes when masks are present.
* Without ``--output`` results are shown in a window (ESC quits); this needs a display, otherwise
  the demo stops with status 2 asking for ``--output``. ``--webcam`` always shows a window.
* Usage errors exit with status 2.
"""
import argparse
import logging
import os
import sys
import time
import warnings
from collections import Counter
from typing import Iterator, List, Optional, Tuple

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
WINDOW_NAME = "YOLACT"
ESC_KEY = 27

logger = logging.getLogger("yolact_demo")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="YOLACT instance segmentation demo (Detectron2 plugin yolact_d2): draws the "
        "masks, boxes, class names and scores of the detections on images, a video or a webcam.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""
Runs on CPU with '--opts MODEL.DEVICE cpu' (the config default is cuda).

Outputs:
  images: --output is a folder for several inputs, a folder or a glob (one <name>.png per
          input); for a single file it is the PNG path if it has an image extension, else a
          folder. Unreadable files are logged and skipped; exit status 1 if any image failed.
  video:  --output is the .mp4 to write (mp4v), or a folder (existing or ending with '/';
          <video name>.mp4 inside).
  none:   without --output results are shown in a window (needs a display; ESC quits).

--confidence-threshold is also used as MODEL.YOLACT.SCORE_THRESH_TEST (overriding the config),
which gives the same detections above the threshold as thresholding afterwards (see
demo/demo.py). Exit status: 0 success, 1 some input failed, 2 usage error.

examples:
  python demo/demo.py --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
      --input images/ --output vis/ --opts MODEL.WEIGHTS output/model_final.pth MODEL.DEVICE cpu
  python demo/demo.py --config-file CONFIG --video-input in.mp4 --output out.mp4 \\
      --opts MODEL.WEIGHTS model.pth
""",
    )
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="path to a yolact_d2 config file"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, glob patterns (quote them) or folders (all images directly inside)",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="use the webcam (device 0); ESC quits")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="output PNG file or folder (images), .mp4 file (video); if omitted, show in a window",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.3,
        metavar="T",
        help="show / save the detections scoring more than T (also sets "
        "MODEL.YOLACT.SCORE_THRESH_TEST); default: %(default)s",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu "
        "(must come last)",
    )
    return parser


# ------------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------------
def _import_yolact_d2():
    try:
        import yolact_d2  # noqa: F401
    except ImportError:  # running from a source checkout that is not installed
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import yolact_d2  # noqa: F401


def setup_cfg(args):
    from detectron2.config import get_cfg

    from yolact_d2 import add_yolact_config
    from yolact_d2.utils.config_loading import merge_config_file, merge_config_list

    cfg = get_cfg()
    add_yolact_config(cfg)
    merge_config_file(cfg, args.config_file)  # one-line errors (YAML syntax, unknown keys)
    merge_config_list(cfg, args.opts)
    if cfg.MODEL.YOLACT.SCORE_THRESH_TEST != args.confidence_threshold:
        logger.info(
            f"MODEL.YOLACT.SCORE_THRESH_TEST: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST} -> "
            f"{args.confidence_threshold} (--confidence-threshold)"
        )
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


def resolve_metadata(cfg):
    """Metadata of ``cfg.DATASETS.TEST[0]`` when it is registered and names exactly
    ``MODEL.YOLACT.NUM_CLASSES`` classes; otherwise generic names ``class 0``, ``class 1``..."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.catalog import Metadata

    from yolact_d2.data.datasets import register_datasets_from_config
    from yolact_d2.data.datasets.coco_from_config import DatasetNameConflictError

    num_classes = int(cfg.MODEL.YOLACT.NUM_CLASSES)
    generic = Metadata(name="yolact_demo_generic")
    generic.set(thing_classes=[f"class {i}" for i in range(num_classes)])
    if not len(cfg.DATASETS.TEST):
        logger.info("DATASETS.TEST is empty: showing generic class ids")
        return generic
    name = cfg.DATASETS.TEST[0]
    try:
        register_datasets_from_config(cfg)
    except DatasetNameConflictError:
        raise  # class names of other data would be shown
    except ValueError as e:
        logger.warning(f"Could not register DATASETS.COCO_INSTANCES ({e})")
    if name not in DatasetCatalog.list():
        logger.warning(f"Dataset '{name}' (DATASETS.TEST[0]) is not registered: showing generic class ids")
        return generic
    metadata = MetadataCatalog.get(name)
    if metadata.get("thing_classes", None) is None:
        try:  # COCO-json datasets only fill thing_classes when loaded
            DatasetCatalog.get(name)
        except Exception as e:  # noqa: BLE001 (any loading problem: fall back to ids)
            logger.warning(f"Could not load dataset '{name}' to read its class names ({e})")
    classes = metadata.get("thing_classes", None)
    if classes is None or len(classes) != num_classes:
        found = "no class names" if classes is None else f"{len(classes)} classes"
        logger.warning(
            f"Dataset '{name}' has {found} but MODEL.YOLACT.NUM_CLASSES is {num_classes}: "
            "showing generic class ids"
        )
        return generic
    return metadata


def open_window() -> bool:
    """Create the display window; False when there is no display (or cv2 has no GUI support)."""
    import cv2

    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not has_display:
        return False
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# Inputs and outputs
# ------------------------------------------------------------------------------------------------
def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def collect_images(specs: List[str]) -> Tuple[List[str], List[str], bool]:
    """Expand ``--input`` into ``(image paths, inputs that do not exist or match nothing,
    several_outputs)``; paths are unique and in command-line order (folders and globs sorted)."""
    import glob

    paths, missing, several = [], [], len(specs) > 1
    for spec in specs:
        if os.path.isdir(spec):
            several = True
            found = sorted(
                os.path.join(spec, f)
                for f in os.listdir(spec)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(spec, f))
            )
            if not found:
                logger.warning(f"No image ({', '.join(IMAGE_EXTENSIONS)}) in folder {spec}")
            paths.extend(found)
        elif os.path.isfile(spec):
            paths.append(spec)
        elif _is_glob(spec):
            several = True
            found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
            if not found:
                logger.error(f"No file matches {spec}")
                missing.append(spec)
            paths.extend(found)
        else:
            logger.error(f"Input not found: {spec}")
            missing.append(spec)
    unique, seen = [], set()
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, missing, several


def output_names(paths: List[str]) -> List[str]:
    """One distinct PNG file name per input: ``<stem>.png``, ``<stem>_<ext>.png`` when stems
    collide, then ``_2``, ``_3``... (compared case-insensitively)."""
    stems = Counter(os.path.splitext(os.path.basename(p))[0].lower() for p in paths)
    names, used = [], set()
    for p in paths:
        stem, ext = os.path.splitext(os.path.basename(p))
        base = stem if stems[stem.lower()] == 1 or not ext else f"{stem}_{ext[1:]}"
        name, k = base, 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        names.append(name + ".png")
    return names


def plan_image_outputs(
    paths: List[str], several: bool, output: Optional[str], parser: argparse.ArgumentParser
) -> List[Optional[str]]:
    if output is None:
        return [None] * len(paths)
    is_folder = several or os.path.isdir(output) or not output.lower().endswith(IMAGE_EXTENSIONS)
    if not is_folder:
        parent = os.path.dirname(output)
        if parent:
            os.makedirs(parent, exist_ok=True)  # as for folder and video outputs
        return [output]
    if os.path.exists(output) and not os.path.isdir(output):
        parser.error(f"--output must be a folder for several inputs, a folder or a glob; {output} is a file")
    os.makedirs(output, exist_ok=True)
    return [os.path.join(output, name) for name in output_names(paths)]


def plan_video_output(video: str, output: Optional[str], parser: argparse.ArgumentParser) -> Optional[str]:
    if output is None:
        return None
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        os.makedirs(output, exist_ok=True)
        return os.path.join(output, os.path.splitext(os.path.basename(video))[0] + ".mp4")
    if not output.lower().endswith(".mp4"):
        parser.error(f"--output for a video must be an .mp4 file or an existing folder, got {output}")
    parent = os.path.dirname(output)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return output


# ------------------------------------------------------------------------------------------------
# Inference and drawing
# ------------------------------------------------------------------------------------------------
class VisualizationDemo:
    """A :class:`~yolact_d2.YolactPredictor` plus Detectron2's visualizers. Images are BGR
    uint8 arrays in and out; only detections scoring more than ``confidence_threshold`` are
    kept (the model's own ``score > SCORE_THRESH_TEST`` rule)."""

    def __init__(self, cfg, confidence_threshold: float, metadata):
        from yolact_d2 import YolactPredictor

        self.predictor = YolactPredictor(cfg)
        self.confidence_threshold = confidence_threshold
        self.metadata = metadata

    def predict(self, bgr):
        instances = self.predictor(bgr)["instances"].to("cpu")
        return instances[instances.scores > self.confidence_threshold]

    def run_on_image(self, bgr):
        """Returns ``(instances kept, drawing as a BGR uint8 image of the input's size)``."""
        from detectron2.utils.visualizer import ColorMode, Visualizer

        instances = self.predict(bgr)
        visualizer = Visualizer(bgr[:, :, ::-1], self.metadata, instance_mode=ColorMode.IMAGE)
        drawn = visualizer.draw_instance_predictions(instances).get_image()
        return instances, drawn[:, :, ::-1]

    def run_on_video(self, capture) -> Iterator:
        """Yields one drawn BGR frame per frame read from the ``cv2.VideoCapture``."""
        from detectron2.utils.video_visualizer import VideoVisualizer
        from detectron2.utils.visualizer import ColorMode

        visualizer = VideoVisualizer(self.metadata, instance_mode=ColorMode.IMAGE)
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            instances = self.predict(frame)
            drawn = visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()
            yield drawn[:, :, ::-1]


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------
def run_images(demo: VisualizationDemo, paths, missing, outputs) -> int:
    import cv2
    from tqdm import tqdm

    # Detectron2's read_image plus 16-bit grayscale rescaling and errors naming the file.
    from yolact_d2.data.detection_utils import read_image_file

    failed = list(missing)
    succeeded = 0
    for path, out in tqdm(list(zip(paths, outputs)), desc="images", unit="img", dynamic_ncols=True):
        try:
            image = read_image_file(path, "BGR")
        except Exception as e:  # noqa: BLE001 (BadImageError, or anything unexpected)
            message = str(e)  # BadImageError names the file and the cause
            logger.error(message if path in message else f"Cannot read image {path}: {type(e).__name__}: {e}")
            failed.append(path)
            continue
        try:
            start = time.perf_counter()
            instances, drawn = demo.run_on_image(image)
        except Exception:  # noqa: BLE001 (report and go on with the other images)
            logger.exception(f"Inference failed on {path}")
            failed.append(path)
            continue
        logger.debug(f"{path}: {len(instances)} instances in {time.perf_counter() - start:.2f}s")
        if out is None:
            cv2.imshow(WINDOW_NAME, drawn)
            succeeded += 1
            if cv2.waitKey(0) == ESC_KEY:
                logger.info("ESC pressed: stopping")
                break
        elif cv2.imwrite(out, drawn):
            succeeded += 1
        else:
            logger.error(f"Cannot write {out} (for input {path}): {_write_failure_cause(out)}")
            failed.append(path)
    logger.info(f"Done: {succeeded} image(s) succeeded, {len(failed)} failed")
    if failed:
        logger.error("Failed inputs: " + ", ".join(failed))
    return 1 if failed else 0


def _write_failure_cause(out: str) -> str:
    """Why ``cv2.imwrite(out, ...)`` returned False (it gives no reason)."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"no permission to write in {folder}"
    if os.path.isdir(out):
        return "a folder of that name exists"
    return "OpenCV cannot encode this file type or the disk is full"


def open_video(video: str):
    """An opened ``cv2.VideoCapture``, or None after logging an error naming the file."""
    import cv2

    if not os.path.isfile(video):
        logger.error(f"Video file not found: {video}")
        return None
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        logger.error(f"Cannot open video {video} (corrupt file or unsupported format/codec)")
        return None
    return capture


def run_video(demo: VisualizationDemo, video: str, output: Optional[str]) -> int:
    import cv2
    from tqdm import tqdm

    capture = open_video(video)
    if capture is None:
        return 1
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not fps or fps != fps or fps <= 0:
        logger.warning(f"{video} does not report a frame rate: writing 30 fps")
        fps = 30.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    total = count if count > 0 else None
    writer, frames = None, 0
    try:
        frames_drawn = demo.run_on_video(capture)
        for drawn in tqdm(frames_drawn, total=total, desc="frames", unit="frame", dynamic_ncols=True):
            frames += 1
            if output is None:
                cv2.imshow(WINDOW_NAME, drawn)
                if cv2.waitKey(1) == ESC_KEY:
                    logger.info("ESC pressed: stopping")
                    break
                continue
            if writer is None:
                height, width = drawn.shape[:2]
                writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), True)
                if not writer.isOpened():
                    logger.error(f"Cannot open {output} for writing (mp4v, {width}x{height})")
                    return 1
            writer.write(np.ascontiguousarray(drawn))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        logger.error(f"No frame could be read from {video}")
        return 1
    if total is not None and frames < total and output is not None:
        logger.warning(f"Read {frames} frames of the {total} that {video} announces")
    if output is not None:
        logger.info(f"Wrote {frames} frames to {output}")
    return 0


def run_webcam(demo: VisualizationDemo) -> int:
    import cv2

    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        logger.error("Cannot open the webcam (cv2.VideoCapture(0))")
        return 1
    try:
        for drawn in demo.run_on_video(capture):
            cv2.imshow(WINDOW_NAME, drawn)
            if cv2.waitKey(1) == ESC_KEY:
                break
    finally:
        capture.release()
    return 0


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
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

    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    _import_yolact_d2()
    from detectron2.utils.logger import setup_logger

    setup_logger(name="fvcore")
    setup_logger()
    setup_logger(name="yolact_d2")
    setup_logger(name=logger.name, abbrev_name="demo")
    logger.info(f"Arguments: {args}")

    if args.input:
        paths, missing, several = collect_images(args.input)
        outputs = plan_image_outputs(paths, several, args.output, parser)
        if not paths:
            logger.error("No image to process")
            return 1
    elif args.video_input:
        video_output = plan_video_output(args.video_input, args.output, parser)
        probe = open_video(args.video_input)  # fail before building the model
        if probe is None:
            return 1
        probe.release()

    cfg = setup_cfg(args)
    demo = VisualizationDemo(cfg, args.confidence_threshold, resolve_metadata(cfg))

    from tqdm.contrib.logging import logging_redirect_tqdm

    console_loggers = [logging.getLogger(n) for n in (logger.name, "detectron2", "fvcore", "yolact_d2")]
    with logging_redirect_tqdm(loggers=console_loggers):
        if args.input:
            status = run_images(demo, paths, missing, outputs)
        elif args.video_input:
            status = run_video(demo, args.video_input, video_output)
        else:
            status = run_webcam(demo)
    if args.output is None:
        import cv2

        cv2.destroyAllWindows()
    return status


if __name__ == "__main__":
    from yolact_d2.utils.errors import run_cli

    sys.exit(run_cli(main))
