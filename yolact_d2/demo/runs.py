"""The loops of yolact-demo (demo/demo.py) over images, a video or the webcam: each input failure is logged with
its path and the run goes on, so one bad file does not lose the others' results."""
import logging
import os
import sys
import time
from typing import Optional

import numpy as np

from ..data.detection_utils import read_image_file  # Detectron2's read_image, 16-bit grayscale, errors naming the file
from .inputs import open_video

__all__ = ["WINDOW_NAME", "open_window", "run_images", "run_video", "run_webcam"]

WINDOW_NAME = "YOLACT"
ESC_KEY = 27

logger = logging.getLogger("yolact_demo")


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


def _draw_one(demo, path: str):
    """The drawing of one image file, or None after logging why there is none."""
    try:
        image = read_image_file(path, "BGR")
    except Exception as e:  # noqa: BLE001 (BadImageError, or anything unexpected)
        message = str(e)  # BadImageError names the file and the cause
        logger.error(message if path in message else f"Cannot read image {path}: {type(e).__name__}: {e}")
        return None
    try:
        start = time.perf_counter()
        instances, drawn = demo.run_on_image(image)
    except Exception:  # noqa: BLE001 (report and go on with the other images)
        logger.exception(f"Inference failed on {path}")
        return None
    logger.debug(f"{path}: {len(instances)} instances in {time.perf_counter() - start:.2f}s")
    return drawn


def run_images(demo, paths, missing, outputs) -> int:
    """Draw every image to its output (None: a window, ESC stops); exit status 1 if any failed."""
    import cv2
    from tqdm import tqdm

    failed = list(missing)
    succeeded = 0
    for path, out in tqdm(list(zip(paths, outputs)), desc="images", unit="img", dynamic_ncols=True):
        drawn = _draw_one(demo, path)
        if drawn is None:
            failed.append(path)
        elif out is None:
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


def _frame_rate(capture, video: str) -> float:
    import cv2

    fps = capture.get(cv2.CAP_PROP_FPS)
    if not fps or fps != fps or fps <= 0:
        logger.warning(f"{video} does not report a frame rate: writing 30 fps")
        fps = 30.0
    return fps


def _show(drawn) -> bool:
    """Show a frame; True when ESC was pressed."""
    import cv2

    cv2.imshow(WINDOW_NAME, drawn)
    return cv2.waitKey(1) == ESC_KEY


def _write_frames(demo, capture, video: str, output: Optional[str], total: Optional[int]) -> Optional[int]:
    """Draw every frame to ``output`` (None: a window); the number of frames, None if the writer failed."""
    import cv2
    from tqdm import tqdm

    fps = _frame_rate(capture, video)
    writer, frames = None, 0
    try:
        frames_drawn = demo.run_on_video(capture)
        for drawn in tqdm(frames_drawn, total=total, desc="frames", unit="frame", dynamic_ncols=True):
            frames += 1
            if output is None:
                if _show(drawn):
                    logger.info("ESC pressed: stopping")
                    break
                continue
            if writer is None:
                height, width = drawn.shape[:2]
                writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), True)
                if not writer.isOpened():
                    logger.error(f"Cannot open {output} for writing (mp4v, {width}x{height})")
                    return None
            writer.write(np.ascontiguousarray(drawn))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return frames


def run_video(demo, video: str, output: Optional[str]) -> int:
    """Draw every frame of ``video`` into the .mp4 ``output`` (None: a window, ESC stops)."""
    import cv2

    capture = open_video(video)
    if capture is None:
        return 1
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    total = count if count > 0 else None
    frames = _write_frames(demo, capture, video, output, total)
    if frames is None:
        return 1
    if frames == 0:
        logger.error(f"No frame could be read from {video}")
        return 1
    if total is not None and frames < total and output is not None:
        logger.warning(f"Read {frames} frames of the {total} that {video} announces")
    if output is not None:
        logger.info(f"Wrote {frames} frames to {output}")
    return 0


def run_webcam(demo) -> int:
    """Show the drawn webcam frames (device 0) until ESC."""
    import cv2

    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        logger.error("Cannot open the webcam (cv2.VideoCapture(0))")
        return 1
    try:
        for drawn in demo.run_on_video(capture):
            if _show(drawn):
                break
    finally:
        capture.release()
    return 0

