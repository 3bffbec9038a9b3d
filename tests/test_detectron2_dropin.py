"""A user's existing Detectron2 script: stock DatasetMapper, DefaultTrainer and DefaultPredictor."""
import cv2
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor, DefaultTrainer
from detectron2.structures import BoxMode

from conftest import tiny_cfg


def _rectangle_dataset(root, n=4):
    rng = np.random.RandomState(0)
    dicts = []
    for i in range(n):
        h, w = (90, 120) if i % 2 else (120, 100)
        img = rng.randint(0, 60, (h, w, 3)).astype(np.uint8)
        x0, y0 = rng.randint(5, 30, 2)
        x1, y1 = x0 + rng.randint(25, 60), y0 + rng.randint(25, 55)
        img[y0:y1, x0:x1] = (40, 200, 240)
        path = str(root / f"img{i}.png")
        cv2.imwrite(path, img)
        poly = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
        dicts.append({
            "file_name": path, "image_id": i, "height": h, "width": w,
            "annotations": [{"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": BoxMode.XYWH_ABS,
                             "category_id": 0, "segmentation": [poly], "iscrowd": 0}],
        })
    return dicts


@pytest.fixture
def stock_cfg(tmp_path):
    name = f"yolact_dropin_{tmp_path.name}"
    dicts = _rectangle_dataset(tmp_path)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["box"])
    cfg = tiny_cfg(num_classes=1, opts=[
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (),
        "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 128,
        "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128,
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2,
        "SOLVER.BASE_LR", 1e-4, "SOLVER.WARMUP_ITERS", 1, "SOLVER.CHECKPOINT_PERIOD", 100,
        "OUTPUT_DIR", str(tmp_path / "out"),
        "MODEL.WEIGHTS", "",  # stock Detectron2 loads nothing for an empty path ('random' is yolact_d2's)
    ])
    yield cfg
    DatasetCatalog.remove(name)


def test_stock_default_trainer_and_dataset_mapper(stock_cfg):
    trainer = DefaultTrainer(stock_cfg)  # builds detectron2's own DatasetMapper (ResizeShortestEdge)
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "head" in k}
    trainer.train()
    assert trainer.iter == 2  # iterations 0 and 1 ran (iter is max_iter after train())
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the head was updated
    latest = trainer.storage.latest()
    for key in ("loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "total_loss"):
        assert np.isfinite(latest[key][0]), key


def test_stock_default_predictor_non_square(stock_cfg):
    predictor = DefaultPredictor(stock_cfg)
    image = np.random.RandomState(1).randint(0, 255, (150, 260, 3)).astype(np.uint8)  # BGR
    out = predictor(image)
    inst = out["instances"]
    assert inst.image_size == (150, 260)
    assert inst.pred_masks.shape == (len(inst), 150, 260)
    assert len(inst) > 0
    assert inst.pred_boxes.tensor[:, 2].max() <= 260 and inst.pred_boxes.tensor[:, 3].max() <= 150
