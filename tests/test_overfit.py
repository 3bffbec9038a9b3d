"""End to end: a few synthetic images overfit on CPU reach near-perfect masks, which shows that
the training targets/losses and the inference path (decode, Fast NMS, mask assembly, crop,
upsampling) agree."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from conftest import tiny_cfg

SIZE = 128


def _image_with_two_shapes(rng):
    """An ellipse partly covered by a rectangle, on a noisy background; visible masks only."""
    img = rng.randint(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
    ellipse = np.zeros((SIZE, SIZE), np.uint8)
    cx, cy = rng.randint(40, 88, 2)
    cv2.ellipse(ellipse, (int(cx), int(cy)), tuple(int(v) for v in rng.randint(22, 38, 2)), 0, 0, 360, 1, -1)
    rect = np.zeros((SIZE, SIZE), np.uint8)
    x0, y0 = rng.randint(0, 60, 2)
    cv2.rectangle(rect, (int(x0), int(y0)), (int(x0 + rng.randint(35, 60)), int(y0 + rng.randint(35, 60))), 1, -1)
    ellipse[rect > 0] = 0
    masks = [ellipse, rect]
    img[ellipse > 0] = (50, 200, 220)
    img[rect > 0] = (200, 100, 220)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    inst = Instances((SIZE, SIZE))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor([0, 1])
    inst.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)).bool())
    return {"image": torch.from_numpy(img).permute(2, 0, 1).float(), "instances": inst, "height": SIZE, "width": SIZE}


def _through_prototype_grid(mask, proto_size):
    """The best any YOLACT can do: the GT mask as the loss sees it (bilinear to the prototype grid,
    > 0.5) and as inference renders it (bilinear back to the image, > 0.5)."""
    small = (F.interpolate(mask[None, None].float(), proto_size, mode="bilinear", align_corners=False) > 0.5).float()
    return F.interpolate(small, mask.shape, mode="bilinear", align_corners=False)[0, 0] > 0.5


def _iou(a, b):
    return ((a & b).sum() / (a | b).sum()).item()


@pytest.mark.slow
def test_overfit_reaches_near_perfect_masks():
    rng = np.random.RandomState(0)
    data = [_image_with_two_shapes(rng) for _ in range(2)]
    model = build_model(tiny_cfg(num_classes=2, image_size=SIZE))
    model.train()
    base_lr, iters = 0.01, 200
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=5e-4)
    for it in range(iters):
        for group in opt.param_groups:  # linear warm-up as the original, shortened
            group["lr"] = base_lr * min(1.0, 0.1 + 0.9 * it / 50)
        losses = model(data)
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
    print("final losses:", {k: round(v.item(), 4) for k, v in losses.items()})
    assert all(v.item() < 0.02 for v in losses.values()), losses

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": d["image"], "height": SIZE, "width": SIZE} for d in data])
    ious, ious_vs_grid = [], []
    for d, out in zip(data, outputs):
        inst = out["instances"]
        assert inst.scores[0] > 0.9
        for gt_mask, gt_class in zip(d["instances"].gt_masks.tensor, d["instances"].gt_classes):
            pred = inst[inst.pred_classes == gt_class][0].pred_masks[0]  # best detection of the class
            ious.append(_iou(pred, gt_mask))
            ious_vs_grid.append(_iou(pred, _through_prototype_grid(gt_mask, (SIZE // 4, SIZE // 4))))
    print("mask IoU vs GT:", np.round(ious, 3), "vs GT through the 32x32 prototype grid:", np.round(ious_vs_grid, 3))
    # Measured: IoU 1.000 against the prototype-grid reference for every object, i.e. the
    # prediction is exactly the best mask the 32x32 prototypes can express; 0.85-0.97 against the
    # full-resolution GT (that gap is the prototype resolution, not training).
    assert min(ious_vs_grid) > 0.98, ious_vs_grid
    assert min(ious) > 0.8, ious
