"""Developer harness: run the ORIGINAL YOLACT code (dbolya/yolact) next to ours, shared by
``dev/parity_check.py`` and ``dev/benchmark_original.py``.

It needs a checkout of the original repository (nothing of it is copied into this project); the
code is imported at run time with the patches P1-P4 (see ``dev/parity_check.py`` and
docs/PARITY.md), built from its config with random weights, *conditioned* so that it behaves like a
trained network, saved in the original format and converted with ``tools/convert_yolact_weights.py``.
Importing this module has no side effects.
"""
import contextlib
import math
import os
import sys
import types
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(REPO_ROOT, "tools")
CONFIG_DIR = os.path.join(REPO_ROOT, "configs", "COCO-InstanceSegmentation")

# our name -> (original config, our config file, file name given to the converter)
VARIANTS = {
    "yolact_base": ("yolact_base_config", "yolact_R_101_FPN_550.yaml", "yolact_base_parity.pth"),
    "yolact_resnet50": ("yolact_resnet50_config", "yolact_R_50_FPN_550.yaml", "yolact_resnet50_parity.pth"),
    "yolact_im400": ("yolact_im400_config", "yolact_R_101_FPN_400.yaml", "yolact_im400_parity.pth"),
    "yolact_im700": ("yolact_im700_config", "yolact_R_101_FPN_700.yaml", "yolact_im700_parity.pth"),
    "yolact_plus_base": ("yolact_plus_base_config", "yolact_plus_R_101_FPN_550.yaml", "yolact_plus_base_parity.pth"),
    "yolact_plus_resnet50": (
        "yolact_plus_resnet50_config", "yolact_plus_R_50_FPN_550.yaml", "yolact_plus_resnet50_parity.pth",
    ),
}
DEFAULT_VARIANTS = ["yolact_base", "yolact_resnet50", "yolact_im400", "yolact_im700", "yolact_plus_base",
                    "yolact_plus_resnet50"]

# Test images: (height, width) of synthetic-dataset renders; the first is also used to condition.
IMAGE_SIZES = [(480, 640), (550, 550), (360, 300)]

# Conditioning targets.
TARGET_FRACTION_ABOVE_THRESH = 0.25  # of all anchors, on the first image (~4.8k of 19,248 at 550)
MAX_ABOVE_THRESH = 5000
SCORE_THRESH = 0.05

# Two detections are "the same" when their classes agree and their relative boxes differ by less
# than this (relative units; 1e-3 is 0.55 px at 550).
SAME_BOX_TOL = 1e-3


def dcnv2_reference(x, offset, mask, weight, bias, stride, padding, dilation):
    """Modulated deformable conv as DCNv2's im2col computes it (one deformable group): for output
    (ho, wo) and kernel tap k = i * kw + j the sample point is ``(ho*s - p + i*d + offset[2k],
    wo*s - p + j*d + offset[2k+1])``; a point with ``h <= -1``, ``w <= -1``, ``h >= H`` or ``w >= W``
    reads 0, otherwise bilinear interpolation where corners outside the map read 0; the sample is
    multiplied by ``mask[k]``. Plain PyTorch, float32, one tap at a time."""
    n, c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    base_y = (torch.arange(ho, dtype=x.dtype) * sh - ph).view(1, ho, 1)
    base_x = (torch.arange(wo, dtype=x.dtype) * sw - pw).view(1, 1, wo)
    flat = x.reshape(n, c, h * w)
    out = x.new_zeros(n, out_c, ho, wo)
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            py = base_y + i * dh + offset[:, 2 * k]
            px = base_x + j * dw + offset[:, 2 * k + 1]
            inside = (py > -1) & (px > -1) & (py < h) & (px < w)
            y0, x0 = torch.floor(py), torch.floor(px)
            ly, lx = py - y0, px - x0
            y0, x0 = y0.long(), x0.long()
            sample = x.new_zeros(n, c, ho, wo)
            for yy, xx, wgt in (
                (y0, x0, (1 - ly) * (1 - lx)),
                (y0, x0 + 1, (1 - ly) * lx),
                (y0 + 1, x0, ly * (1 - lx)),
                (y0 + 1, x0 + 1, ly * lx),
            ):
                ok = inside & (yy >= 0) & (xx >= 0) & (yy <= h - 1) & (xx <= w - 1)
                idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).view(n, 1, ho * wo).expand(n, c, ho * wo)
                vals = flat.gather(2, idx).view(n, c, ho, wo)
                sample += vals * (wgt * ok).unsqueeze(1)
            sample = sample * mask[:, k].unsqueeze(1)
            out += torch.einsum("nchw,oc->nohw", sample, weight[:, :, i, j])
    return out + bias.view(1, -1, 1, 1)


def make_dcn_v2_module(dcn_stats: Optional[List[float]]) -> types.ModuleType:
    """P2: a stand-in for the compiled ``dcn_v2`` extension: ``DCN`` with DCNv2's parameters
    (``weight``, ``bias``, ``conv_offset_mask``) and forward, via torchvision. If ``dcn_stats`` is
    a list, every call also runs :func:`dcnv2_reference` and appends the max abs difference."""
    from torch import nn
    from torch.nn.modules.utils import _pair
    from torchvision.ops import deform_conv2d

    class DCN(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, deformable_groups=1):
            super().__init__()
            if deformable_groups != 1:
                raise NotImplementedError("the parity shim supports one deformable group (all YOLACT++ configs)")
            self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
            self.padding, self.dilation = _pair(padding), _pair(dilation)
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
            self.bias = nn.Parameter(torch.zeros(out_channels))
            bound = 1.0 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.weight, -bound, bound)  # DCNv2.reset_parameters
            taps = self.kernel_size[0] * self.kernel_size[1]
            self.conv_offset_mask = nn.Conv2d(
                in_channels, 3 * taps, self.kernel_size, stride=self.stride, padding=self.padding, bias=True
            )
            nn.init.zeros_(self.conv_offset_mask.weight)
            nn.init.zeros_(self.conv_offset_mask.bias)

        def forward(self, x):
            o1, o2, m = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
            offset, mask = torch.cat((o1, o2), dim=1), torch.sigmoid(m)
            out = deform_conv2d(
                x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                dilation=self.dilation, mask=mask,
            )
            if dcn_stats is not None:
                ref = dcnv2_reference(x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation)
                dcn_stats.append(float((out - ref).abs().max() / ref.abs().max().clamp(min=1e-12)))
            return out

    module = types.ModuleType("dcn_v2")
    module.DCN = DCN
    return module


def import_original(repo: str, dcn_stats: Optional[List[float]]) -> Dict[str, Any]:
    """Import the original modules from ``repo`` with patches P1 and P2."""
    repo = os.path.abspath(repo)
    if not os.path.isfile(os.path.join(repo, "yolact.py")):
        raise SystemExit(f"error: --original-repo {repo}: no yolact.py there (expected a dbolya/yolact checkout)")
    sys.path.insert(0, repo)
    sys.modules["dcn_v2"] = make_dcn_v2_module(dcn_stats)  # P2
    saved = torch.cuda.current_device
    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0  # P1
    try:
        import data.config as ocfg  # noqa: E402  (the original's modules)
        import yolact as oyolact
        from layers.output_utils import postprocess
        from utils.augmentations import BaseTransform
    finally:
        torch.cuda.current_device = saved
    return {"cfg_module": ocfg, "yolact": oyolact, "postprocess": postprocess, "BaseTransform": BaseTransform}


def build_original(orig: Dict[str, Any], config_name: str):
    ocfg = orig["cfg_module"]
    ocfg.set_cfg(config_name)
    ocfg.cfg.mask_proto_debug = False  # P3
    net = orig["yolact"].Yolact()
    net.detect.use_fast_nms = True  # P4
    net.detect.use_cross_class_nms = False
    return net, ocfg.cfg


def _is_conv(module) -> bool:
    name = getattr(module, "original_name", type(module).__name__)
    return "Conv" in name and hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 4


def condition_original(net, images_nchw: List[torch.Tensor], gen: torch.Generator) -> Dict[str, Any]:
    """Make the random original model produce realistic outputs (see the module docstring). The
    steps draw from ``gen`` in this order, so the conditioned weights depend on the seed only."""
    _randomise_parameters(net, gen)
    _calibrate_batch_norm(net, images_nchw)
    return _rescale_outputs(net, images_nchw[0], gen)


def _rand(gen, *shape, low=0.0, high=1.0):
    return torch.rand(*shape, generator=gen) * (high - low) + low


def _randn(gen, *shape, std=1.0):
    return torch.randn(*shape, generator=gen) * std


def _randomise_parameters(net, gen: torch.Generator) -> None:
    """Convs, backbone BN affine parameters, DCN offsets and the mask-IoU bias, at random."""
    from torch import nn

    backbone_convs = set(id(m) for m in net.backbone.modules())
    with torch.no_grad():
        # Non-backbone convs: Xavier as the original's init_weights, plus small random biases so
        # that every bias goes through the converter too.
        for m in net.modules():
            if id(m) not in backbone_convs and _is_conv(m):
                nn.init.xavier_uniform_(m.weight, generator=gen)
                if m.bias is not None:
                    m.bias.copy_(_randn(gen, *m.bias.shape, std=0.02))
        # Backbone BN affine parameters (the last BN of a residual branch small, like trained nets).
        for name, m in net.backbone.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                last = name.endswith("bn3") or name.endswith("downsample.1")
                low, high = (0.1, 0.4) if last else (0.6, 1.2)
                m.weight.copy_(_rand(gen, m.num_features, low=low, high=high))
                m.bias.copy_(_randn(gen, m.num_features, std=0.1))
        # DCN: random bias, offsets of about a pixel, modulation around sigmoid(0) = 0.5.
        for m in net.backbone.modules():
            if hasattr(m, "conv_offset_mask"):
                fan_in = m.conv_offset_mask.weight[0].numel()
                offset_std = 0.7 / math.sqrt(fan_in)
                m.conv_offset_mask.weight.copy_(_randn(gen, *m.conv_offset_mask.weight.shape, std=offset_std))
                m.conv_offset_mask.bias.copy_(_randn(gen, *m.conv_offset_mask.bias.shape, std=0.3))
                m.bias.copy_(_randn(gen, *m.bias.shape, std=0.05))
        if hasattr(net, "maskiou_net"):
            last = getattr(net.maskiou_net.maskiou_net, "10")
            last.bias.copy_(_rand(gen, *last.bias.shape, low=0.2, high=0.8))


def _calibrate_batch_norm(net, images_nchw: List[torch.Tensor]) -> None:
    """BN running statistics from batch statistics of the test images (cumulative average)."""
    from torch import nn

    bns = [m for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for x in images_nchw:
            net.backbone(x)
    for m in bns:
        m.momentum = 0.1
    net.eval()


def _rescale_outputs(net, image: torch.Tensor, gen: torch.Generator) -> Dict[str, Any]:
    """Head and protonet: measure on one image, rescale the last layers to realistic outputs."""
    head = net.prediction_layers[0]
    captured: Dict[str, List[torch.Tensor]] = {"conf": [], "bbox": [], "mask": [], "proto": []}
    hooks = [
        head.conf_layer.register_forward_hook(lambda m, i, o: captured["conf"].append(o)),
        head.bbox_layer.register_forward_hook(lambda m, i, o: captured["bbox"].append(o)),
        head.mask_layer.register_forward_hook(lambda m, i, o: captured["mask"].append(o)),
        net.proto_net.register_forward_hook(lambda m, i, o: captured["proto"].append(o)),
    ]
    with torch.no_grad():
        net(image)
    for h in hooks:
        h.remove()
    num_classes = net.detect.num_classes  # 81, with background
    conf = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, num_classes) for c in captured["conf"]])
    bbox = torch.cat([b.reshape(-1) for b in captured["bbox"]])
    coef = torch.cat([c.reshape(-1) for c in captured["mask"]])
    proto = captured["proto"][0]

    with torch.no_grad():
        # prototypes: pre-ReLU std 2 with a small negative shift (sparse, non-negative maps)
        s_proto = 2.0 / proto.std().item()
        last = net.proto_net[-1]
        last.weight.mul_(s_proto)
        last.bias.mul_(s_proto).sub_(0.5)
        # coefficients: pre-tanh std 1.2
        s_coef = 1.2 / coef.std().item()
        head.mask_layer.weight.mul_(s_coef)
        head.mask_layer.bias.mul_(s_coef)
        # box deltas: std 1 (centres move ~0.1 anchor, sizes x exp(+-0.2))
        s_box = 1.0 / bbox.std().item()
        head.bbox_layer.weight.mul_(s_box)
        head.bbox_layer.bias.mul_(s_box)
        # class logits: foreground std 1.5, per-class offsets, then the background offset that
        # puts the target number of anchors above the score threshold
        s_conf = 1.5 / conf[:, 1:].std().item()
        class_offset = _randn(gen, num_classes, std=0.4)
        class_offset[0] = 0
        logits = conf * s_conf + class_offset
        target = min(MAX_ABOVE_THRESH, int(TARGET_FRACTION_ABOVE_THRESH * conf.shape[0]))
        lo, hi = -20.0, 40.0
        for _ in range(60):
            mid = (lo + hi) / 2
            shifted = logits.clone()
            shifted[:, 0] += mid
            n_above = int((F.softmax(shifted, -1)[:, 1:].max(-1)[0] > SCORE_THRESH).sum())
            lo, hi = (mid, hi) if n_above > target else (lo, mid)
        bg_offset = (lo + hi) / 2
        num_anchors = head.conf_layer.weight.shape[0] // num_classes
        offsets = class_offset.clone()
        offsets[0] = bg_offset
        head.conf_layer.weight.mul_(s_conf)
        head.conf_layer.bias.mul_(s_conf).add_(offsets.repeat(num_anchors))
    return {"scales": {"proto": s_proto, "coef": s_coef, "box": s_box, "conf": s_conf}, "bg_offset": bg_offset,
            "target_above_thresh": target}


def test_images() -> List[np.ndarray]:
    from yolact_d2.data.datasets.synthetic import render_synthetic_sample

    images = []
    for i, (h, w) in enumerate(IMAGE_SIZES):
        sample = render_synthetic_sample(seed=123, split="parity", index=i, image_size=((h, h), (w, w)), max_objects=8)
        images.append(sample["image"])
    return images


def load_converter_tool():
    """``tools/convert_yolact_weights.py`` as a module (the parity check converts with the real tool)."""
    if TOOLS_DIR not in sys.path:
        sys.path.insert(0, TOOLS_DIR)
    import convert_yolact_weights

    return convert_yolact_weights


def load_weights_checked(model, weights: str) -> Dict[str, List[str]]:
    """Load ``weights`` into ``model`` with the stock ``DetectionCheckpointer``; returns the
    missing / unexpected / mis-shaped keys (all empty for a clean conversion)."""
    from yolact_d2.utils.detectron2_internals import CheckpointerExtensionPoints  # DetectionCheckpointer

    class RecordingCheckpointer(CheckpointerExtensionPoints):
        def load_model_state(self, checkpoint):
            self.incompatible = super().load_model_state(checkpoint)
            return self.incompatible

    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(weights)
    incompatible = checkpointer.incompatible
    return {
        "missing": list(incompatible.missing_keys),
        "unexpected": list(incompatible.unexpected_keys),
        "incorrect_shapes": [k for k, *_ in incompatible.incorrect_shapes],
    }


def original_input(orig_mods, image: np.ndarray) -> torch.Tensor:
    """``BaseTransform`` (eval.py's dataset transform) of a BGR uint8 image as a (1, 3, S, S) tensor.
    Its ``Resize`` also filters ground truth, so it gets one dummy box (ignored)."""
    h, w = image.shape[:2]
    masks = np.zeros((1, h, w), np.float32)
    boxes = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    labels = {"labels": np.array([0]), "num_crowds": 0}
    img = orig_mods["BaseTransform"]()(image, masks, boxes, labels)[0]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def prepare_original(orig_mods, variant: str, inputs: List[torch.Tensor], work_dir: str, seed: int):
    """Build the original model of ``variant`` (``torch.manual_seed(seed)`` for its random init),
    condition it on ``inputs`` (original-protocol input tensors, see :func:`original_input`), save
    its ``state_dict`` in the original format (+ the unused third downsample layer of the released
    files) under ``work_dir`` and convert it with ``tools/convert_yolact_weights.py``.
    Returns ``(net, original cfg, conditioning info, original .pth, converted .pth)``."""
    config_name, _, file_name = VARIANTS[variant]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net, ocfg = build_original(orig_mods, config_name)
    conditioning = condition_original(net, inputs, gen)

    state = net.state_dict()
    extra = state["fpn.downsample_layers.1.weight"]
    state["fpn.downsample_layers.2.weight"] = torch.randn(extra.shape, generator=gen) * 0.01
    state["fpn.downsample_layers.2.bias"] = torch.zeros(extra.shape[0])
    original_path = os.path.join(work_dir, file_name)
    converted_path = os.path.join(work_dir, file_name.replace(".pth", "_d2.pth"))
    torch.save(state, original_path)

    converter = load_converter_tool()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        code = converter.main([original_path, converted_path])
    if code != 0:
        raise RuntimeError(f"convert_yolact_weights.py failed with exit code {code}")
    return net, ocfg, conditioning, original_path, converted_path


def variant_for_config(config_file: str) -> Optional[str]:
    """The variant whose config file has the base name of ``config_file`` (None if none)."""
    name = os.path.basename(config_file)
    return next((v for v, (_, ours, _) in VARIANTS.items() if ours == name), None)
