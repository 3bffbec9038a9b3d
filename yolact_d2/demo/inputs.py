"""What ``--input`` / ``--video-input`` and ``--output`` of yolact-demo (demo/demo.py) name: the images to read and
the files to write (the rules are in ``yolact-demo --help``)."""
import glob
import logging
import os
from collections import Counter
from typing import Callable, List, Optional, Tuple

from ..utils.atomic_io import make_output_dir
from ..utils.file_checks import unreadable_file_cause

__all__ = [
    "IMAGE_EXTENSIONS", "collect_images", "output_names", "plan_image_outputs", "plan_video_output", "open_video",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("yolact_demo")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _expand(spec: str, missing: List[str]) -> Tuple[List[str], bool]:
    """The images one ``--input`` item names, and whether it names a set (folder or glob)."""
    if os.path.isdir(spec):
        found = sorted(
            os.path.join(spec, f)
            for f in os.listdir(spec)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(spec, f))
        )
        if not found:
            logger.warning(f"No image ({', '.join(IMAGE_EXTENSIONS)}) in folder {spec}")
        return found, True
    if os.path.isfile(spec):
        return [spec], False
    if _is_glob(spec):
        found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
        if not found:
            logger.error(f"No file matches {spec}")
            missing.append(spec)
        return found, True
    cause = unreadable_file_cause(spec)  # a FIFO (reading it would block), a link loop...
    if cause in (None, "does not exist"):
        logger.error(f"Input not found: {spec}")
    else:
        logger.error(f"Input {spec} {cause}")
    missing.append(spec)
    return [], False


def collect_images(specs: List[str]) -> Tuple[List[str], List[str], bool]:
    """Expand ``--input`` into ``(image paths, inputs that do not exist or match nothing,
    several_outputs)``; paths are unique and in command-line order (folders and globs sorted)."""
    paths, missing, several = [], [], len(specs) > 1
    for spec in specs:
        found, is_set = _expand(spec, missing)
        paths.extend(found)
        several = several or is_set
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
    paths: List[str], several: bool, output: Optional[str], usage_error: Callable[[str], None]
) -> List[Optional[str]]:
    """The file to write for each image (None: show it in a window); folders are created.
    ``usage_error`` is ``parser.error``: an output that cannot be used is a usage error."""
    if output is None:
        return [None] * len(paths)
    is_folder = several or os.path.isdir(output) or not output.lower().endswith(IMAGE_EXTENSIONS)
    if not is_folder:
        parent = os.path.dirname(output)
        if parent:
            make_output_dir(parent, "--output folder")  # as for folder and video outputs
        return [output]
    if os.path.exists(output) and not os.path.isdir(output):
        usage_error(f"--output must be a folder for several inputs, a folder or a glob; {output} is a file")
    make_output_dir(output, "--output")
    return [os.path.join(output, name) for name in output_names(paths)]


def plan_video_output(video: str, output: Optional[str], usage_error: Callable[[str], None]) -> Optional[str]:
    """The .mp4 file to write for ``video`` (None: show it in a window)."""
    if output is None:
        return None
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        make_output_dir(output, "--output")
        return os.path.join(output, os.path.splitext(os.path.basename(video))[0] + ".mp4")
    if not output.lower().endswith(".mp4"):
        usage_error(f"--output for a video must be an .mp4 file or an existing folder, got {output}")
    parent = os.path.dirname(output)
    if parent:
        make_output_dir(parent, "--output folder")
    return output


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
