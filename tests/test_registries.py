"""The extension points: a head, a protonet and a mask re-scoring net registered by a user
(YOLACT_HEAD_REGISTRY, PROTONET_REGISTRY, MASKIOU_NET_REGISTRY) are built by the names in
MODEL.YOLACT.HEAD_NAME / PROTONET_NAME / MASK_IOU_NET_NAME and train: a real loss whose gradients
reach the parameters only the custom modules have."""
import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from yolact_d2.modeling import (
    MASKIOU_NET_REGISTRY,
    PROTONET_REGISTRY,
    YOLACT_HEAD_REGISTRY,
    FastMaskIoUNet,
    ProtoNet,
    YolactHead,
    build_yolact_head,
)
from yolact_d2.solver import build_optimizer
from yolact_d2.utils.errors import ConfigError

from conftest import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


# Each adds one learnable factor on an output, initialised to 2 (exact in floating point), so that the
# effect is observable exactly against the stock module built with the same seed.
@YOLACT_HEAD_REGISTRY.register()
class ScaledLogitsHead(YolactHead):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))  # no random numbers drawn: same init otherwise

    def forward(self, features):
        class_logits, box_deltas, coefficients = super().forward(features)
        return class_logits * self.logit_scale, box_deltas, coefficients


@PROTONET_REGISTRY.register()
class GainProtoNet(ProtoNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return super().forward(x) * self.gain


@MASKIOU_NET_REGISTRY.register()
class ScaledMaskIoUNet(FastMaskIoUNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.iou_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, masks):
        return super().forward(masks) * self.iou_scale


# 256 px: the 64x64 prototypes the mask re-scoring net accepts
OPTS = ["MODEL.YOLACT.MASK_IOU_ON", True]
CUSTOM = ["MODEL.YOLACT.HEAD_NAME", "ScaledLogitsHead", "MODEL.YOLACT.PROTONET_NAME", "GainProtoNet",
          "MODEL.YOLACT.MASK_IOU_NET_NAME", "ScaledMaskIoUNet"]


def _model(opts):
    torch.manual_seed(0)
    return build_model(tiny_cfg(image_size=256, opts=OPTS + opts))


def _batch():
    g = torch.Generator().manual_seed(0)
    inst = Instances((256, 256))
    inst.gt_boxes = Boxes(torch.tensor([[20.0, 30.0, 160.0, 200.0], [120.0, 100.0, 250.0, 240.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, 256, 256, dtype=torch.bool)
    masks[0, 30:200, 20:160] = True
    masks[1, 100:240, 120:250] = True
    inst.gt_masks = BitMasks(masks)
    return [{"image": torch.rand(3, 256, 256, generator=g) * 255, "instances": inst}]


def test_custom_modules_are_built_by_name_and_change_the_outputs():
    stock, custom = _model([]), _model(CUSTOM)
    assert (type(custom.head), type(custom.protonet), type(custom.maskiou_net)) == (
        ScaledLogitsHead, GainProtoNet, ScaledMaskIoUNet)
    assert (type(stock.head), type(stock.protonet), type(stock.maskiou_net)) == (YolactHead, ProtoNet, FastMaskIoUNet)
    # the same weights but for the three new factors
    extra = {"head.logit_scale", "protonet.gain", "maskiou_net.iou_scale"}
    stock_state, custom_state = stock.state_dict(), custom.state_dict()
    assert set(custom_state) - set(stock_state) == extra and set(stock_state) <= set(custom_state)
    assert all(torch.equal(stock_state[k], custom_state[k]) for k in stock_state)
    x = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        logits, deltas, coeffs, protos, anchors, _ = stock.predict_raw(x)
        c_logits, c_deltas, c_coeffs, c_protos, c_anchors, _ = custom.predict_raw(x)
        masks = torch.rand(4, 1, 64, 64)
        stock_iou, custom_iou = stock.maskiou_net(masks), custom.maskiou_net(masks)
    assert torch.equal(c_logits, 2 * logits) and torch.equal(c_protos, 2 * protos)
    assert torch.equal(c_deltas, deltas) and torch.equal(c_coeffs, coeffs) and torch.equal(c_anchors, anchors)
    assert protos.abs().sum() > 0 and torch.equal(custom_iou, 2 * stock_iou) and stock_iou.abs().sum() > 0


def test_custom_modules_train_one_step():
    cfg = tiny_cfg(image_size=256, opts=OPTS + CUSTOM)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    factors = {"head.logit_scale": model.head.logit_scale, "protonet.gain": model.protonet.gain,
               "maskiou_net.iou_scale": model.maskiou_net.iou_scale}
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in in_optimizer for p in factors.values())
    losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "loss_mask_iou"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    for name, p in factors.items():
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0, name
    optimizer.step()
    assert all(p.item() != 2.0 for p in factors.values())  # the step moved every new factor


def test_stock_head_on_levels_of_different_widths_names_the_key_and_the_way_out():
    levels = [ShapeSpec(channels=c, stride=s) for c, s in zip((64, 128, 64, 64, 64), (8, 16, 32, 64, 128))]
    with pytest.raises(ConfigError) as info:
        build_yolact_head(tiny_cfg(), levels)
    assert (info.value.what, info.value.cause) == (
        "MODEL.YOLACT.IN_FEATURES ['p3', 'p4', 'p5', 'p6', 'p7']",
        "the levels have [64, 128] channels, but YolactHead shares its weights across levels")
    assert "MODEL.YOLACT.HEAD_NAME" in info.value.fix
