"""The demo's logic, importable (yolact-demo, i.e. yolact_d2/cli/demo.py, and demo/app.py are the
command lines): the visualising predictor (:mod:`.predictor`), the expansion of ``--input`` /
``--output`` (:mod:`.inputs`) and the loops over images, a video or the webcam (:mod:`.runs`), the
browser demo's logic (:mod:`.web`, used by demo/app.py) and the ground truth | prediction PNGs of
``train_net.py --num-vis`` (:mod:`.visualization`).
Messages go to the ``yolact_demo`` logger."""
from .inputs import IMAGE_EXTENSIONS, collect_images, open_video, output_names, plan_image_outputs, plan_video_output
from .predictor import VisualizationDemo, resolve_metadata
from .runs import WINDOW_NAME, open_window, run_images, run_video, run_webcam

__all__ = [
    "IMAGE_EXTENSIONS", "WINDOW_NAME", "VisualizationDemo", "resolve_metadata", "collect_images", "output_names",
    "plan_image_outputs", "plan_video_output", "open_video", "open_window", "run_images", "run_video", "run_webcam",
]
