"""No input is silently misread (docs/RELIABILITY.md, "Silent wrong results" and "Unclear failures"):
dataset names registered twice, eval-only without weights, 0..1 float images, json boxes that disagree
with their masks, class counts of every dataset, a full disk during a checkpoint write, YAML errors."""
import errno
import json
import os
import uuid

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from conftest import captured, tiny_cfg
from yolact_d2.data.datasets import generate_synthetic_dataset, register_datasets_from_config
from yolact_d2.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("one_thread")


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("misreads_synthetic"))
    json_file = generate_synthetic_dataset(root, "train", 4, seed=5, image_size=(48, 64))
    return json_file, os.path.join(root, "train")


def _entry_cfg(name, json_file, image_root, *opts):
    return tiny_cfg(num_classes=6, opts=["DATASETS.COCO_INSTANCES", [[name, json_file, image_root]], *opts])


# ------------------------------------------------------------------------------------------------
# 1. DATASETS.COCO_INSTANCES names that are already registered
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("existing", ["coco_2017_train", "yolact_synthetic_train"])
def test_entry_with_a_registered_name_is_an_error_naming_both_sources(synthetic, existing):
    import yolact_d2.data.datasets  # noqa: F401 (registers yolact_synthetic_*)
    import detectron2.data.datasets  # noqa: F401 (registers the built-ins)

    json_file, image_root = synthetic
    old_json = MetadataCatalog.get(existing).json_file
    with pytest.raises(ConfigError) as e:
        register_datasets_from_config(_entry_cfg(existing, json_file, image_root))
    message = str(e.value)
    assert message.startswith(f"DATASETS.COCO_INSTANCES[0]: the dataset name '{existing}' (json {json_file}")
    assert f"already registered with other data: {old_json}" in message
    assert f"DATASETS.COCO_INSTANCES_REPLACE \"['{existing}']\"" in message
    assert MetadataCatalog.get(existing).json_file == old_json  # nothing changed


def test_same_entry_twice_is_fine_and_replace_reregisters_with_a_warning(synthetic):
    json_file, image_root = synthetic
    name = _unique("dup")
    cfg = _entry_cfg(name, json_file, image_root)
    assert register_datasets_from_config(cfg) == [name]
    assert register_datasets_from_config(cfg) == [name]  # setup run twice in one process
    other_root = os.path.dirname(json_file)
    with pytest.raises(ConfigError, match=f"'{name}' .* already registered with other data: {json_file}"):
        register_datasets_from_config(_entry_cfg(name, json_file, other_root))
    with captured() as records:
        register_datasets_from_config(
            _entry_cfg(name, json_file, other_root, "DATASETS.COCO_INSTANCES_REPLACE", [name])
        )
    text = "\n".join(r.getMessage() for r in records)
    assert f"re-registering dataset '{name}'" in text and f"registered with {json_file} (images {image_root})" in text
    assert MetadataCatalog.get(name).image_root == other_root
    # the replaced registration is the one used
    assert DatasetCatalog.get(name)[0]["file_name"].startswith(other_root)


# ------------------------------------------------------------------------------------------------
# 4. json bbox vs mask extent
# ------------------------------------------------------------------------------------------------
def _box_mask_json(tmp_path):
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]  # extent XYXY [10, 10, 30, 30]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": square},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [35, 5, 20, 30], "segmentation": square},
            {"id": 13, "image_id": 1, "category_id": 1, "bbox": [12, 12, 20, 20], "segmentation": square},
        ],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(data))
    (tmp_path / "imgs").mkdir()
    return str(path), str(tmp_path / "imgs")


def test_json_bbox_that_disagrees_with_its_mask_warns_once_with_counts(tmp_path):
    json_file, image_root = _box_mask_json(tmp_path)
    name = _unique("boxmask")
    register_datasets_from_config(_entry_cfg(name, json_file, image_root))
    with captured() as records:
        dicts = DatasetCatalog.get(name)
    warnings = [r.getMessage() for r in records if "disagrees with the extent" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{json_file}: 1 of 3 annotations have a bbox that disagrees")
    assert "image_id 1), annotation id 12: bbox [35, 5, 55, 35] vs mask extent [10, 10, 30, 30] (XYXY), IoU 0.00" \
        in warnings[0]
    assert "INPUT.GT_BOX_SOURCE 'mask'" in warnings[0]
    # the default keeps the json box (the original's behaviour)
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[10, 10, 20, 20], [35, 5, 20, 30], [12, 12, 20, 20]]


@pytest.mark.parametrize("source,expected", [
    ("json", [[10, 10, 30, 30], [35, 5, 55, 35]]),
    ("mask", [[10, 10, 30, 30], [10, 10, 30, 30]]),
])
def test_gt_box_source_chooses_the_training_boxes(tmp_path, source, expected):
    from detectron2.structures import BoxMode

    from yolact_d2.data.dataset_mapper import YolactDatasetMapper

    json_file, image_root = _box_mask_json(tmp_path)
    name = _unique("boxsrc")
    register_datasets_from_config(_entry_cfg(name, json_file, image_root))
    record = DatasetCatalog.get(name)[0]
    mapper = YolactDatasetMapper(tiny_cfg(num_classes=1, opts=["INPUT.GT_BOX_SOURCE", source]), is_train=True)
    kept = mapper._check_annotations(record["annotations"][:2], record, (40, 60))
    assert [a["bbox_mode"] for a in kept] == [BoxMode.XYXY_ABS] * 2
    assert [list(map(float, a["bbox"])) for a in kept] == expected


def test_gt_box_source_must_be_json_or_mask():
    from yolact_d2.data.dataset_mapper import YolactDatasetMapper

    with pytest.raises(ConfigError, match="INPUT.GT_BOX_SOURCE 'box': must be 'json' or 'mask'"):
        YolactDatasetMapper(tiny_cfg(opts=["INPUT.GT_BOX_SOURCE", "box"]), is_train=True)
