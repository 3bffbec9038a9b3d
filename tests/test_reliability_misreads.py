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
