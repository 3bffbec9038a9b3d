"""Detectron2 ResNet with YOLACT++'s deformable bottlenecks.

YOLACT++ replaces the 3x3 conv of some bottlenecks by DCNv2. In a stage with deform on, block
``i`` is deformable iff ``i % interval == 0`` (the original's rule
``(i + dcn_layers >= blocks) and (i % interval == 0)`` with ``dcn_layers = blocks``, which is what
every released config uses). The released models use

* R-101: C3-C5 with interval 3 -> 11 DCN blocks: ``res3.{0,3}``, ``res4.{0,3,...,21}``, ``res5.0``;
* R-50: C3-C5 with interval 1 -> all 13 bottlenecks of C3-C5.

Config: Detectron2's own ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` / ``DEFORM_MODULATED`` /
``DEFORM_NUM_GROUPS`` plus ``MODEL.YOLACT.DEFORM_INTERVAL``. Detectron2's ``build_resnet_backbone``
would build its ``DeformBottleneckBlock``, which needs Detectron2's compiled extension and has a
different parameter layout, so this module builds the ResNet itself from Detectron2's ``ResNet``,
``BasicStem`` and ``BottleneckBlock``; only the deformable blocks differ, and all other parameter
names stay Detectron2's (``res{2..5}.{b}.conv{1,2,3}``, ``.shortcut``, ``.norm``).
"""
from typing import List

import fvcore.nn.weight_init as weight_init

from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from ...layers.deform_conv import ModulatedDeformConv2d
from ...utils.errors import ConfigError

__all__ = [
    "DCNv2BottleneckBlock", "deformable_blocks", "make_yolact_resnet_stages", "build_yolact_resnet_backbone",
    "BASIC_BLOCK_DEPTHS",
]

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
BASIC_BLOCK_DEPTHS = (18, 34)  # ResNets of basic blocks; the others are of bottleneck blocks


class DCNv2BottleneckBlock(BottleneckBlock):
    """Detectron2's ``BottleneckBlock`` whose 3x3 ``conv2`` is a :class:`ModulatedDeformConv2d`
    (stride on the 3x3 unless ``stride_in_1x1``), followed by the block's norm as ``conv2.norm``,
    as in the original (``conv2 -> bn2 -> relu``). Parameter names inside ``conv2`` are DCNv2's:
    ``weight``, ``bias``, ``conv_offset_mask.{weight,bias}``."""

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        num_groups=1,
        norm="BN",
        stride_in_1x1=False,
        dilation=1,
        deform_num_groups=1,
    ):
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        self.conv2 = ModulatedDeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=1 if stride_in_1x1 else stride,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            deformable_groups=deform_num_groups,
            bias=True,
            norm=get_norm(norm, bottleneck_channels),
        )
        # Same weight init as the other convs of the block; bias and offsets/mask stay zero.
        weight_init.c2_msra_fill(self.conv2)


def deformable_blocks(num_blocks: int, deform_on: bool, interval: int) -> List[bool]:
    """Which blocks of a stage are deformable: block ``i`` iff deform is on and ``i % interval == 0``."""
    if interval < 1:
        raise ConfigError("MODEL.YOLACT.DEFORM_INTERVAL", f"must be >= 1, got {interval}",
                          "1 makes every block of a deformable stage deformable, N every N-th")
    return [bool(deform_on) and i % interval == 0 for i in range(num_blocks)]


def check_resnet_depth(depth: int) -> None:
    """``MODEL.RESNETS.DEPTH`` one of the ResNets that both backbone builders know (Detectron2's
    raises a bare KeyError for another)."""
    if depth not in _BLOCKS_PER_STAGE:
        raise ConfigError("MODEL.RESNETS.DEPTH", f"must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")


def make_yolact_resnet_stages(
    depth: int,
    *,
    norm: str = "BN",
    stride_in_1x1: bool = False,
    num_groups: int = 1,
    width_per_group: int = 64,
    stem_out_channels: int = 64,
    res2_out_channels: int = 256,
    res5_dilation: int = 1,
    deform_on_per_stage=(False, False, False, False),
    deform_modulated: bool = True,
    deform_interval: int = 1,
    deform_num_groups: int = 1,
) -> List[list]:
    """The blocks of res2..res5 for Detectron2's ``ResNet(stem, stages, ...)``: one list per stage,
    with :class:`DCNv2BottleneckBlock` where ``deform_on_per_stage`` and ``deform_interval`` say so.
    Arguments are the ``MODEL.RESNETS.*`` keys in lower case (``deform_interval``:
    ``MODEL.YOLACT.DEFORM_INTERVAL``); the yaml builder and the LazyConfigs both build with it."""
    check_resnet_depth(depth)
    deform_on = list(deform_on_per_stage)
    if len(deform_on) != 4:
        raise ConfigError("MODEL.RESNETS.DEFORM_ON_PER_STAGE", f"needs 4 entries (res2..res5), got {deform_on}",
                          "e.g. [False, True, True, True], YOLACT++'s")
    if any(deform_on) and not deform_modulated:
        raise ConfigError(
            "MODEL.RESNETS.DEFORM_MODULATED False (DCNv1)",
            "is not supported; YOLACT++ uses modulated deformable convolutions (DCNv2)", "set it to True",
        )
    if res5_dilation not in (1, 2):
        raise ConfigError("MODEL.RESNETS.RES5_DILATION", f"must be 1 or 2, got {res5_dilation}")
    basic = depth in BASIC_BLOCK_DEPTHS
    if basic and (any(deform_on) or res5_dilation != 1 or num_groups != 1):
        raise ConfigError(
            f"MODEL.RESNETS.DEPTH {depth}",
            "R-18/R-34 have basic blocks: they need MODEL.RESNETS.RES5_DILATION 1, NUM_GROUPS 1 and no "
            "deformable stages (DEFORM_ON_PER_STAGE all False)", "set those, or use a ResNet-50 or deeper",
        )
    in_channels = stem_out_channels
    out_channels = res2_out_channels
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        blocks = []
        for i, deform in enumerate(deformable_blocks(num_blocks, deform_on[idx], deform_interval)):
            kwargs = {"stride": first_stride if i == 0 else 1, "norm": norm}
            if basic:
                block_class = BasicBlock
            else:
                kwargs.update(
                    bottleneck_channels=bottleneck_channels,
                    num_groups=num_groups,
                    stride_in_1x1=stride_in_1x1,
                    dilation=dilation,
                )
                if deform:
                    block_class = DCNv2BottleneckBlock
                    kwargs["deform_num_groups"] = deform_num_groups
                else:
                    block_class = BottleneckBlock
            blocks.append(block_class(in_channels if i == 0 else out_channels, out_channels, **kwargs))
        stages.append(blocks)
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """A Detectron2 ``ResNet`` from ``MODEL.RESNETS.*`` (same keys and semantics as Detectron2's
    ``build_resnet_backbone``), with :class:`DCNv2BottleneckBlock` where
    ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` and ``MODEL.YOLACT.DEFORM_INTERVAL`` say so."""
    r = cfg.MODEL.RESNETS
    # the stem first: the order of random initialisation of a given seed stays the same
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages = make_yolact_resnet_stages(
        r.DEPTH,
        norm=r.NORM,
        stride_in_1x1=r.STRIDE_IN_1X1,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        res5_dilation=r.RES5_DILATION,
        deform_on_per_stage=r.DEFORM_ON_PER_STAGE,
        deform_modulated=r.DEFORM_MODULATED,
        deform_interval=cfg.MODEL.YOLACT.DEFORM_INTERVAL,
        deform_num_groups=r.DEFORM_NUM_GROUPS,
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
