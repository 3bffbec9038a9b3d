"""The demo's predictor: :class:`~yolact_d2.YolactPredictor` plus Detectron2's visualizers, and the
class names to draw, laid out as Detectron2's own demo."""
import logging
from typing import Iterator

from ..data.datasets import register_datasets_from_config
from ..data.datasets.coco_from_config import DatasetNameConflictError
from ..predictor import YolactPredictor

__all__ = ["VisualizationDemo", "resolve_metadata"]

logger = logging.getLogger("yolact_demo")


class VisualizationDemo:
    """Images are BGR uint8 arrays in and out; only detections scoring more than
    ``confidence_threshold`` are kept (the model's own ``score > SCORE_THRESH_TEST`` rule).

    yolact-demo also writes the threshold T into ``MODEL.YOLACT.SCORE_THRESH_TEST``, and that gives
    exactly the detections the config's own threshold would give after keeping ``score > T``: the
    model applies the threshold (also ``> T``) to each anchor's best class score before NMS, and
    neither the NMS (a box is only ever suppressed by higher-scoring boxes) nor the per-class top-k
    and max-detection cuts (which keep the highest scores) let a box scoring T or less change what
    happens to a box scoring more. A higher T is less work; a lower T shows the
    low-scoring detections.
    """

    def __init__(self, cfg, confidence_threshold: float, metadata=None):
        self.predictor = YolactPredictor(cfg)
        self.confidence_threshold = confidence_threshold
        # default: DATASETS.TEST's names, else the ones the checkpoint records, else generic ids
        # (the predictor's cfg: its class count may come from the checkpoint)
        self.metadata = metadata if metadata is not None else resolve_metadata(
            self.predictor.cfg, self.predictor.class_names)

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
        """Yields one drawn BGR frame per frame read from the ``cv2.VideoCapture``. Detectron2's
        ``VideoVisualizer`` keeps an instance's colour across frames and, like Detectron2's video
        demo, draws no boxes when there are masks."""
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


def resolve_metadata(cfg, checkpoint_classes=None):
    """Metadata of ``cfg.DATASETS.TEST[0]`` when it is registered and names exactly
    ``MODEL.YOLACT.NUM_CLASSES`` classes, the ones the checkpoint records if any; otherwise the class names the
    checkpoint records
    (``checkpoint_classes``, ``YolactPredictor.class_names``), else generic names ``class 0``,
    ``class 1``... so that a model is never shown with the class names of other data."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.catalog import Metadata

    num_classes = int(cfg.MODEL.YOLACT.NUM_CLASSES)
    generic = Metadata(name="yolact_demo_generic")
    if checkpoint_classes and len(checkpoint_classes) == num_classes:
        generic.set(thing_classes=list(checkpoint_classes))  # the training's names, from the checkpoint
        showing = "the class names recorded in the checkpoint"
    else:
        generic.set(thing_classes=[f"class {i}" for i in range(num_classes)])
        showing = "generic class ids"
    if not len(cfg.DATASETS.TEST):
        logger.info(f"DATASETS.TEST is empty: showing {showing}")
        return generic
    name = cfg.DATASETS.TEST[0]
    try:
        register_datasets_from_config(cfg)
    except DatasetNameConflictError:
        raise  # class names of other data would be shown
    except ValueError as e:
        logger.warning(f"Could not register DATASETS.COCO_INSTANCES ({e})")
    if name not in DatasetCatalog.list():
        logger.warning(f"Dataset '{name}' (DATASETS.TEST[0]) is not registered: showing {showing}")
        return generic
    metadata = MetadataCatalog.get(name)
    if metadata.get("thing_classes", None) is None:
        try:  # COCO-json datasets only fill thing_classes when loaded
            DatasetCatalog.get(name)
        except Exception as e:  # noqa: BLE001 (any loading problem: fall back to ids)
            logger.warning(f"Could not load dataset '{name}' to read its class names ({e})")
    classes = metadata.get("thing_classes", None)
    if checkpoint_classes and classes is not None and list(classes) != list(checkpoint_classes):
        logger.warning(f"Dataset '{name}' (DATASETS.TEST[0]) has other classes than the checkpoint: showing {showing}")
        return generic
    if classes is None or len(classes) != num_classes:
        found = "no class names" if classes is None else f"{len(classes)} classes"
        logger.warning(
            f"Dataset '{name}' has {found} but MODEL.YOLACT.NUM_CLASSES is {num_classes}: "
            f"showing {showing}"
        )
        return generic
    return metadata
