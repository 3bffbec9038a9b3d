"""The ground truth COCO evaluation scores against: the annotations the loader kept after its checks
(docs/RELIABILITY.md, "Evaluation scores against the checked annotations").

Detectron2's ``COCOEvaluator`` reads the dataset's json file itself (``metadata.json_file``), so an
annotation that :func:`~yolact_d2.data.datasets.coco_from_config.load_coco_instances` dropped (a
one-point polygon, an RLE of the wrong size) was still a ground-truth object that no model could
find, and a two-point polygon crashed pycocotools after the whole inference.
:func:`checked_coco_ground_truth` builds the pycocotools ``COCO`` object from the checked dataset
dicts instead: the same images, the categories with their json ids, and the kept annotations with
their checked boxes and segmentations (and the json's ``area`` when it gave one).
"""
import contextlib
import io
from typing import Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..data.datasets.coco_from_config import load_report
from ..data.detection_utils import image_size_of_file

__all__ = ["checked_coco_ground_truth"]


def _segmentation_and_area(segm, height: int, width: int) -> Tuple[object, float]:
    """The segmentation in COCO json form (compressed RLE counts as text) and its mask area."""
    if isinstance(segm, dict):
        counts = segm["counts"]
        rle = {"size": [int(v) for v in segm["size"]], "counts": counts}
        area = float(mask_util.area(rle))
        if isinstance(counts, bytes):
            rle["counts"] = counts.decode("ascii")
        return rle, area
    if isinstance(segm, np.ndarray):
        rle = mask_util.encode(np.asfortranarray(segm.astype(np.uint8)))
        area = float(mask_util.area(rle))
        rle["counts"] = rle["counts"].decode("ascii")
        return rle, area
    polygons = [list(map(float, p)) for p in segm]
    area = float(mask_util.area(mask_util.merge(mask_util.frPyObjects(polygons, height, width))))
    return polygons, area


def checked_coco_ground_truth(dataset_name: str) -> Tuple[Optional[COCO], str]:
    """``(COCO, note)``: a pycocotools ``COCO`` of the annotations :func:`load_coco_instances` kept
    for ``dataset_name`` and a line saying how many it has and how many were dropped at load; None
    and "" for datasets of another loader (Detectron2 then reads their json as usual)."""
    records = DatasetCatalog.get(dataset_name)
    report = load_report(dataset_name)
    if report is None:
        return None, ""
    meta = MetadataCatalog.get(dataset_name)
    contiguous_to_json = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    images, annotations = [], []
    for record in records:
        height, width = record.get("height", None), record.get("width", None)
        image = {"id": record["image_id"], "file_name": record["file_name"]}
        if height is not None and width is not None:
            image.update(height=height, width=width)
        images.append(image)
        for ann in record["annotations"]:
            segm = ann["segmentation"]
            if isinstance(segm, list) and (height is None or width is None):  # polygons need the size
                height, width = image_size_of_file(record["file_name"])
                image.update(height=height, width=width)
            segm, mask_area = _segmentation_and_area(segm, height, width)
            box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
            annotations.append({
                "id": len(annotations) + 1,  # pycocotools needs ids > 0; the json's may be missing
                "image_id": record["image_id"],
                "category_id": contiguous_to_json[ann["category_id"]],
                "bbox": [float(v) for v in box],
                "area": ann.get("area", mask_area),
                "iscrowd": int(ann.get("iscrowd", 0)),
                "segmentation": segm,
            })
    categories = [{"id": contiguous_to_json[i], "name": name} for i, name in enumerate(meta.thing_classes)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    note = (
        f"COCO evaluation of '{dataset_name}' against {len(annotations)} annotations in {len(images)} images, "
        f"as loaded and checked from {report.json_file}; {report.describe_dropped()}"
    )
    return coco, note
