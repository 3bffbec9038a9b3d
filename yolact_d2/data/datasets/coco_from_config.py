"""Register COCO-format datasets listed in ``DATASETS.COCO_INSTANCES`` (name, json, image root),
so a user trains on their own data from the command line without writing code.

The json is read by :func:`load_coco_instances`, which produces the same dataset dicts as
Detectron2's ``load_coco_json`` (images sorted by id, contiguous category ids in the order of the
sorted dataset ids, ``bbox`` in XYWH_ABS) but checks every annotation once, as it loads it, and
says what it does with each bad one, naming the json file, the image and the annotation id
(docs/RELIABILITY.md). Images of known size are marked as checked, so that the training mapper does
not check their annotations again.
"""
import functools
import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from numbers import Real
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...utils.errors import ConfigError, DataError
from ...utils.file_checks import unreadable_file_cause
from ..annotation_checks import (
    BOX_MASK_IOU_THRESHOLD,
    CHECKED_FOR_SIZE_KEY,
    AnnotationError,
    box_iou_xyxy,
    check_annotation,
    format_annotation,
    mask_extent_xyxy,
)

__all__ = [
    "register_datasets_from_config",
    "register_coco_instances_list",
    "coco_instances_dataset_dicts",
    "load_coco_instances",
    "DatasetNameConflictError",
    "LoadReport",
    "load_report",
]

logger = logging.getLogger(__name__)

# Per json file, this many annotation problems are logged one by one at WARNING level; the rest
# at DEBUG level. A summary with the counts is always logged.
MAX_LOGGED_PROBLEMS = 100


class DatasetNameConflictError(ConfigError):
    """A DATASETS.COCO_INSTANCES name is already registered with other data."""


def _describe_registration(name: str) -> str:
    """Where the existing registration of ``name`` reads its data from (json and images when its
    metadata says so, else the loader function)."""
    meta = MetadataCatalog.get(name)
    json_file, image_root = meta.get("json_file", None), meta.get("image_root", None)
    if json_file:
        return f"{json_file} (images {image_root})" if image_root else str(json_file)
    try:
        func = DatasetCatalog[name]
    except KeyError:
        return "an unknown loader"
    func = getattr(func, "func", func)  # functools.partial
    return f"the loader {getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _same_files(name: str, json_file: str, image_root: str) -> bool:
    meta = MetadataCatalog.get(name)
    old_json, old_root = meta.get("json_file", None), meta.get("image_root", None)
    if not old_json or not old_root:
        return False
    same = lambda a, b: os.path.abspath(str(a)) == os.path.abspath(str(b))  # noqa: E731
    return same(old_json, json_file) and same(old_root, image_root)


def _register(name: str, json_file: str, image_root: str) -> None:
    DatasetCatalog.register(name, functools.partial(load_coco_instances, json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")


def register_datasets_from_config(cfg) -> list:
    """Registers every entry of ``cfg.DATASETS.COCO_INSTANCES``; returns the names.

    An entry whose name is already registered with the same json and image root is left as it is
    (setup may run twice in one process). A name registered with other data (a Detectron2 built-in
    such as ``coco_2017_train``, ``yolact_synthetic_train``, an earlier entry) is a
    :class:`ConfigError` naming both sources, unless the name is in
    ``DATASETS.COCO_INSTANCES_REPLACE``: then it is re-registered with a warning. Malformed entries
    and missing paths are a :class:`ConfigError` naming the key and the entry."""
    return register_coco_instances_list(cfg.DATASETS.COCO_INSTANCES, cfg.DATASETS.get("COCO_INSTANCES_REPLACE", ()))


def register_coco_instances_list(entries, replace=(), key_name: str = "DATASETS.COCO_INSTANCES") -> list:
    """:func:`register_datasets_from_config` for a list of ``[name, json_file, image_root]`` entries and
    the names allowed to replace a registration (``DATASETS.COCO_INSTANCES_REPLACE``); ``key_name``
    names the list in errors (a LazyConfig's key)."""
    replace = set(str(n) for n in replace)
    names = []
    for i, entry in enumerate(entries):
        key = f"{key_name}[{i}]"
        if isinstance(entry, str) or not isinstance(entry, Sequence) or len(entry) != 3:
            raise ConfigError(key, f"got {entry!r}", fix="each entry must be [name, json_file, image_root]")
        name, json_file, image_root = (str(x) for x in entry)
        cause = unreadable_file_cause(json_file)
        if cause == "does not exist":
            raise ConfigError(f"{key} ('{name}'): json file {json_file}", "not found", fix="check the path")
        if cause is not None:
            raise ConfigError(f"{key} ('{name}'): json file {json_file}", cause, fix="name a readable json file")
        if not os.path.isdir(image_root):
            raise ConfigError(f"{key} ('{name}'): image root {image_root}", "not found (no such folder)",
                              fix="check the path")
        if name in names:
            raise ConfigError(key, f"the name '{name}' appears twice in {key_name}",
                              fix="give each dataset its own name")
        if name not in DatasetCatalog.list():
            _register(name, json_file, image_root)
        elif not _same_files(name, json_file, image_root):
            existing = _describe_registration(name)
            if name not in replace:
                raise DatasetNameConflictError(
                    f"{key}: the dataset name '{name}' (json {json_file}, images {image_root}) is already "
                    f"registered with other data: {existing}",
                    fix=f"use another name, or re-register it with DATASETS.COCO_INSTANCES_REPLACE \"['{name}']\"",
                )
            logger.warning(
                f"{key}: re-registering dataset '{name}' with json {json_file} (images {image_root}); it was "
                f"registered with {existing} (DATASETS.COCO_INSTANCES_REPLACE)"
            )
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
            _register(name, json_file, image_root)
        names.append(name)
    return names


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class _ProblemLog:
    """Logs annotation problems of one json file (the first MAX_LOGGED_PROBLEMS at WARNING)."""

    def __init__(self, json_file: str):
        self.json_file = json_file
        self.counts: Dict[str, int] = defaultdict(int)
        self.logged = 0
        self.drop_examples: List[str] = []

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if kind.startswith("annotations ") and len(self.drop_examples) < 3:
            self.drop_examples.append(message)
        level = logging.WARNING if self.logged < MAX_LOGGED_PROBLEMS else logging.DEBUG
        self.logged += 1
        logger.log(level, message)

    def summary(self) -> None:
        if not self.counts:
            return
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        more = ""
        if self.logged > MAX_LOGGED_PROBLEMS:
            more = (
                f" The first {MAX_LOGGED_PROBLEMS} problems are logged above; set the 'yolact_d2' "
                "logger to DEBUG to see all of them."
            )
        logger.warning(f"{self.json_file}: annotation problems: {parts}.{more}")


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_coco_instances` kept and dropped of one json (for the evaluation's log line:
    it scores against the annotations that were kept, docs/RELIABILITY.md): the count of each kind of
    problem and up to three examples of dropped annotations."""

    json_file: str
    counts: Dict[str, int]
    examples: List[str]

    @property
    def dropped(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind.startswith("annotations "))

    def describe_dropped(self) -> str:
        """``"3 dropped at load (2 annotations dropped, 1 ...; e.g. ...)"`` or ``"none dropped at load"``."""
        if not self.dropped:
            return "none dropped at load"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()) if kind.startswith("annotations "))
        example = f"; e.g. {self.examples[0]}" if self.examples else ""
        return f"{self.dropped} dropped at load ({kinds}{example})"


# The last report of each dataset name loaded by load_coco_instances in this process.
_LOAD_REPORTS: Dict[str, LoadReport] = {}


def load_report(dataset_name: str) -> Optional[LoadReport]:
    """The :class:`LoadReport` of the last :func:`load_coco_instances` of ``dataset_name`` in this
    process, or None (another loader, or not loaded yet)."""
    return _LOAD_REPORTS.get(dataset_name)


class _BoxMaskDisagreement:
    """Counts annotations whose json bbox disagrees with the extent of their mask (IoU below
    BOX_MASK_IOU_THRESHOLD) and warns once per json with the count and the first example."""

    def __init__(self, json_file: str):
        self.json_file = json_file
        self.checked = 0
        self.count = 0
        self.example = None

    def check(self, where: str, box, segm) -> None:
        extent = mask_extent_xyxy(segm)
        if extent is None:
            return
        self.checked += 1
        iou = box_iou_xyxy(box, extent)
        if iou < BOX_MASK_IOU_THRESHOLD:
            self.count += 1
            if self.example is None:
                fmt = lambda b: "[" + ", ".join(f"{v:g}" for v in b) + "]"  # noqa: E731
                self.example = f"{where}: bbox {fmt(box)} vs mask extent {fmt(extent)} (XYXY), IoU {iou:.2f}"

    def summary(self) -> None:
        if not self.count:
            return
        logger.warning(
            f"{self.json_file}: {self.count} of {self.checked} annotations have a bbox that disagrees with "
            f"the extent of their segmentation (IoU < {BOX_MASK_IOU_THRESHOLD}); e.g. {self.example}. Training "
            "uses the json bbox (INPUT.GT_BOX_SOURCE 'json', as the original YOLACT); set INPUT.GT_BOX_SOURCE "
            "'mask' to use the mask extent, or fix the json."
        )


def _read_json(json_file: str) -> dict:
    cause = unreadable_file_cause(json_file)  # a FIFO would block in open() forever
    coco = "give a COCO instances json (images, annotations, categories)"
    if cause is not None:
        raise DataError(f"{json_file}", cause, fix="name a readable json file")
    try:
        with open(json_file, "r") as f:
            data = json.load(f)
    except RecursionError:  # json's decoder recurses once per level of nesting
        raise DataError(f"{json_file}", "is nested too deeply for Python's json reader (thousands of levels of "
                        "[ or {): not a COCO instances file", fix=coco) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{json_file} is not valid JSON", str(e), fix="fix the file, or write it again") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{json_file} is not a UTF-8 text (JSON) file", str(e), fix=coco) from e
    if not isinstance(data, dict) or not isinstance(data.get("images", None), list):
        raise DataError(f"{json_file}", "is not a COCO instances file: it has no 'images' list", fix=coco)
    return data


def _categories(json_file: str, data: dict):
    cats = data.get("categories", None)
    if not isinstance(cats, list) or not cats:
        raise DataError(json_file, "has no 'categories' list",
                        fix="COCO instance annotations need one: [{\"id\": 1, \"name\": ...}, ...]")
    names = {}
    for c in cats:
        if not isinstance(c, dict) or not _is_int(c.get("id", None)) or "name" not in c:
            raise DataError(json_file, f"category {c!r} has no integer 'id' or no 'name'",
                            fix="give every category an integer 'id' and a 'name'")
        if c["id"] in names:
            raise DataError(json_file, f"category id {c['id']} appears twice in 'categories'",
                            fix="give each category its own id")
        names[c["id"]] = str(c["name"])
    ids = sorted(names)
    return {cid: i for i, cid in enumerate(ids)}, [names[cid] for cid in ids]


def _images(json_file: str, data: dict, image_root: str) -> Dict[Any, dict]:
    images = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise DataError(json_file, f"image entry {entry!r} needs an 'id' and a 'file_name'",
                            fix="give every image entry both")
        if entry["id"] in images:
            raise DataError(json_file, f"image id {entry['id']!r} appears twice in 'images'",
                            fix="give each image its own id")
        record = {"file_name": os.path.join(image_root, entry["file_name"]), "image_id": entry["id"]}
        for key in ("height", "width"):
            value = entry.get(key, None)
            if value is not None:
                if not _is_int(value) or value <= 0:
                    raise DataError(
                        f"{json_file}: image {entry['id']!r} ({entry['file_name']})", f"has {key} {value!r}",
                        fix="it must be a positive integer (or absent)",
                    )
                record[key] = value
        record["annotations"] = []
        images[entry["id"]] = record
    return images


def load_coco_instances(json_file: str, image_root: str, dataset_name: Optional[str] = None) -> List[dict]:
    """Detectron2 dataset dicts of a COCO instances json, with checked annotations.

    Sets ``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` in the metadata of
    ``dataset_name`` (when given). Annotations keep their COCO ``id`` under ``"id"``.

    Errors (``ValueError`` / :class:`~yolact_d2.data.annotation_checks.AnnotationError`, naming the
    file and the entry): invalid JSON, no ``images`` / ``categories``, duplicate image, category or
    annotation ids, an annotation whose ``category_id`` is not in ``categories``, ``ignore: 1``
    (not supported, as in Detectron2), annotations of which none has a segmentation.

    Fixed or dropped with a warning naming the image and annotation id: see
    :func:`yolact_d2.data.annotation_checks.check_annotation`. Annotations of image ids not in
    ``images`` are ignored with a warning. Images without annotations are kept (training drops them
    per ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``; evaluation keeps them). Images whose json gives
    their height and width carry :data:`~yolact_d2.data.annotation_checks.CHECKED_FOR_SIZE_KEY`:
    their annotations were checked for that size (boxes clipped, mask sizes compared), and the
    training mapper does not check them again; the others are checked by the mapper, which reads the
    image's size from the file.
    """
    data = _read_json(json_file)
    id_map, thing_classes = _categories(json_file, data)
    images = _images(json_file, data, image_root)
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(json_file, "'annotations' is not a list", fix="make it a list of annotation objects")

    problems = _ProblemLog(json_file)
    disagreement = _BoxMaskDisagreement(json_file)
    seen_ids = set()
    num_with_segmentation = 0
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataError(json_file, f"annotation #{index} is not an object: {ann!r}",
                            fix="every annotation is an object with an image_id, a bbox and a segmentation")
        ann_id = ann.get("id", None)
        if ann_id is not None:
            if ann_id in seen_ids:
                raise DataError(json_file, f"annotation id {ann_id!r} appears twice",
                                fix="give each annotation its own id")
            seen_ids.add(ann_id)
        record = images.get(ann.get("image_id", None), None)
        if record is None:
            problems.add(
                "annotations of unknown images (ignored)",
                f"{json_file}: annotation {ann_id if ann_id is not None else '#' + str(index)} has "
                f"image_id {ann.get('image_id', None)!r}, which is not in 'images': ignored",
            )
            continue
        where = format_annotation(f"{json_file}: image {record['file_name']}", record["image_id"], ann_id, index)
        if ann.get("category_id", None) not in id_map:
            raise AnnotationError(
                f"{where} has category_id {ann.get('category_id', None)!r}, which is not in the "
                f"json's 'categories' (ids {sorted(id_map)}). Add the category or fix the annotation."
            )
        if ann.get("ignore", 0):
            raise AnnotationError(f"{where} has 'ignore': 1, which is not supported; use 'iscrowd': 1")
        if ann.get("segmentation", None):
            num_with_segmentation += 1
        height, width = record.get("height", None), record.get("width", None)
        checked = check_annotation(ann, height, width, bbox_mode=BoxMode.XYWH_ABS)
        for note in checked.notes:
            problems.add("polygons dropped or fixed", f"{where}: {note}")
        if not checked.kept:
            problems.add("annotations dropped", f"{where}: {checked.dropped}: annotation dropped")
            continue
        if checked.clipped is not None:
            problems.add("boxes clipped", f"{where}: {checked.clipped}")
        disagreement.check(where, checked.box, checked.segmentation)
        kept = {
            "id": ann_id,
            "bbox": BoxMode.convert(checked.box, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS),
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": id_map[ann["category_id"]],
            "iscrowd": int(bool(ann.get("iscrowd", 0))),
            "segmentation": checked.segmentation,
        }
        area = ann.get("area", None)
        if isinstance(area, Real) and not isinstance(area, bool) and math.isfinite(area) and area > 0:
            kept["area"] = float(area)  # COCO's small / medium / large ranges use the json's area
        record["annotations"].append(kept)
    if annotations and num_with_segmentation == 0:
        raise DataError(
            json_file, f"none of its {len(annotations)} annotations has a segmentation",
            fix="YOLACT trains instance masks and needs polygons or RLE masks",
        )
    problems.summary()
    disagreement.summary()
    if dataset_name is not None:
        _LOAD_REPORTS[dataset_name] = LoadReport(json_file, problems.counts, problems.drop_examples)

    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.thing_classes = thing_classes
        meta.thing_dataset_id_to_contiguous_id = id_map
    records = [images[i] for i in sorted(images, key=lambda x: (str(type(x)), x))]
    for record in records:
        if "height" in record and "width" in record:
            record[CHECKED_FOR_SIZE_KEY] = (record["height"], record["width"])
    logger.info(
        f"Loaded {len(records)} images and {sum(len(r['annotations']) for r in records)} "
        f"annotations from {json_file}"
    )
    return records


def coco_instances_dataset_dicts(names, coco_instances=(), filter_empty: bool = True) -> List[dict]:
    """Detectron2's ``get_detection_dataset_dicts(names, filter_empty)`` after registering
    ``coco_instances`` (``[name, json_file, image_root]`` entries, as ``DATASETS.COCO_INSTANCES``): a
    LazyConfig's ``dataset`` that brings its own COCO-format data, with no code to run first."""
    from detectron2.data import get_detection_dataset_dicts

    register_coco_instances_list(coco_instances, key_name="dataset.coco_instances")
    return get_detection_dataset_dicts(names, filter_empty=filter_empty)
