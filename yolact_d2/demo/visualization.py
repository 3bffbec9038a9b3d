"""PNG visualisations of predictions next to the ground truth, for a quick look after training."""
import logging
import os
from typing import List

import cv2
import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..data.dataset_mapper import YolactDatasetMapper
from ..data.detection_utils import read_image_file
from ..utils.atomic_io import make_output_dir
from ..utils.detectron2_internals import create_text_labels
from ..utils.errors import UserError
from .inputs import output_names

__all__ = ["save_prediction_visualizations", "draw_instances", "instance_colors"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def save_prediction_visualizations(
    cfg, model, dataset_name: str, output_dir: str, num_images: int = 8, score_threshold: float = 0.3
) -> List[str]:
    """Runs ``model`` on the first ``num_images`` images of ``dataset_name`` and writes, for each,
    a PNG with the ground truth (left) and the predictions scoring above ``score_threshold`` (right),
    named after the image file (``<stem>.png``; ``<stem>_<ext>.png``, ``_2``... when two images share a
    stem, so that ``a.png`` and ``a.jpg`` do not overwrite each other). Returns the written paths."""
    make_output_dir(output_dir, "visualisation folder")
    metadata = MetadataCatalog.get(dataset_name)
    mapper = YolactDatasetMapper(cfg, is_train=False)
    was_training = model.training
    model.eval()
    paths = []
    records = DatasetCatalog.get(dataset_name)[:num_images]
    for record, name in zip(records, output_names([r["file_name"] for r in records])):
        rgb = read_image_file(record["file_name"], "RGB")
        gt = Visualizer(rgb, metadata, scale=2.0).draw_dataset_dict(record).get_image()
        instances = model([mapper(dict(record))])[0]["instances"].to("cpu")
        instances = instances[instances.scores > score_threshold]
        pred = Visualizer(rgb, metadata, scale=2.0, instance_mode=ColorMode.IMAGE).draw_instance_predictions(instances)
        canvas = np.concatenate([gt, pred.get_image()], axis=1)
        path = os.path.join(output_dir, name)
        if not cv2.imwrite(path, np.ascontiguousarray(canvas[:, :, ::-1])):
            raise UserError(f"--num-vis: cannot write {path}", "OpenCV could not write it (disk full or not writable?)")
        paths.append(path)
    model.train(was_training)
    logger.info(f"Wrote {len(paths)} visualisations (ground truth | prediction) to {output_dir}")
    return paths


def instance_colors(num: int) -> List[np.ndarray]:
    """``num`` distinct RGB colours in [0, 1] from Detectron2's colormap, the same for the same
    index every time (``draw_instance_predictions`` picks random ones, which flicker on redraw)."""
    from detectron2.utils.colormap import colormap

    table = colormap(rgb=True, maximum=1)
    return [table[i % len(table)] for i in range(num)]


def draw_instances(
    rgb: np.ndarray, instances, metadata, mask_alpha: float = 0.5, colors=None, scale: float = 1.0
) -> np.ndarray:
    """Detectron2's ``Visualizer.draw_instance_predictions`` (``ColorMode.IMAGE``: masks, boxes,
    "class score%" labels) with a chosen mask opacity and chosen colours; RGB uint8 in, RGB uint8
    ``scale`` times the size out."""
    visualizer = Visualizer(rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    classes = instances.pred_classes.tolist()
    labels = create_text_labels(classes, instances.scores, metadata.get("thing_classes", None))
    masks = np.asarray(instances.pred_masks) if instances.has("pred_masks") and len(instances) else None
    visualizer.overlay_instances(
        masks=masks, boxes=instances.pred_boxes, labels=labels, assigned_colors=colors, alpha=mask_alpha
    )
    return visualizer.output.get_image()
