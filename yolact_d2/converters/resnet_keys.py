"""ResNet parameter renaming shared by both converters (original YOLACT and torchvision use the
same ``conv{k}`` / ``bn{k}`` / ``downsample`` names), and the check that the renamed keys form a
standard Detectron2 ResNet: every key of the detected depth there, with its shape, so that a
converted file never loads with a layer left at its initialisation."""
import re
from collections.abc import Mapping
from typing import Dict, Optional, Tuple

import torch

from .state_dicts import short_list

# (blocks per stage, bottleneck?) -> depth
RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BN_REQUIRED = ("weight", "bias", "running_mean", "running_var")
DCN_OFFSET_CHANNELS = 27  # 3 x 3x3 taps (dy, dx, mask), one deformable group


def rename_resnet_layer(stage: int, block: str, module: str, suffix: str) -> Optional[str]:
    """``stage`` is 0-based (res2 = 0). ``module`` is ``conv{k}``, ``bn{k}`` or
    ``downsample.{0,1}``, or for YOLACT++'s DCN ``conv2`` also ``conv2.conv_offset_mask`` and a
    ``bias``. Returns the Detectron2 name or None if the suffix is not valid."""
    prefix = f"backbone.bottom_up.res{stage + 2}.{block}."
    if module.startswith("conv"):
        # a conv bias exists only in DCN blocks; resnet_structure checks where it may appear
        return prefix + f"{module}.{suffix}" if suffix in ("weight", "bias") else None
    if module.startswith("bn"):
        return prefix + f"conv{module[2:]}.norm.{suffix}" if suffix in BN_SUFFIXES else None
    if module == "downsample.0":
        return prefix + "shortcut.weight" if suffix == "weight" else None
    if module == "downsample.1":
        return prefix + f"shortcut.norm.{suffix}" if suffix in BN_SUFFIXES else None
    return None


def rename_resnet_stem(module: str, suffix: str) -> Optional[str]:
    if module == "conv1":
        return "backbone.bottom_up.stem.conv1.weight" if suffix == "weight" else None
    if module == "bn1":
        return f"backbone.bottom_up.stem.conv1.norm.{suffix}" if suffix in BN_SUFFIXES else None
    return None


def rename_torchvision_key(key: str) -> Optional[str]:
    """Our name for a torchvision ResNet key (without ``fc.*``), or None if it is not one."""
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)", key)
    if m:
        return rename_resnet_layer(int(m.group(1)) - 1, m.group(2), m.group(3), m.group(4))
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    return rename_resnet_stem(m.group(1), m.group(2)) if m else None


def _expected_shapes(
    renamed: Mapping[str, torch.Tensor], counts: Tuple[int, ...], bottleneck: bool, allow_dcn: bool
) -> Dict[str, Tuple[int, ...]]:
    """Every key a Detectron2 ResNet with these blocks needs (num_batches_tracked is optional) and
    its shape, with the widths of a standard ResNet whose stem has `width` channels (64 for the real ones)."""
    stem = renamed.get("backbone.bottom_up.stem.conv1.weight")
    width = stem.shape[0] if stem is not None and stem.dim() == 4 else 64
    expected: Dict[str, Tuple[int, ...]] = {"backbone.bottom_up.stem.conv1.weight": (width, 3, 7, 7)}
    expected.update({f"backbone.bottom_up.stem.conv1.norm.{s}": (width,) for s in BN_REQUIRED})
    in_ch = width
    for stage, n in enumerate(counts):
        planes = width * 2**stage
        out_ch = planes * 4 if bottleneck else planes
        for b in range(n):
            block_in = in_ch if b == 0 else out_ch
            prefix = f"backbone.bottom_up.res{stage + 2}.{b}."
            if bottleneck:
                convs = {1: (planes, block_in, 1, 1), 2: (planes, planes, 3, 3), 3: (out_ch, planes, 1, 1)}
            else:
                convs = {1: (planes, block_in, 3, 3), 2: (planes, planes, 3, 3)}
            if b == 0 and block_in != out_ch:
                convs["shortcut"] = (out_ch, block_in, 1, 1)
            for k, shape in convs.items():
                name = prefix + ("shortcut" if k == "shortcut" else f"conv{k}")
                expected[name + ".weight"] = shape
                expected.update({f"{name}.norm.{s}": (shape[0],) for s in BN_REQUIRED})
            if allow_dcn and bottleneck and prefix + "conv2.conv_offset_mask.weight" in renamed:
                expected[prefix + "conv2.bias"] = (planes,)
                expected[prefix + "conv2.conv_offset_mask.weight"] = (DCN_OFFSET_CHANNELS, planes, 3, 3)
                expected[prefix + "conv2.conv_offset_mask.bias"] = (DCN_OFFSET_CHANNELS,)
        in_ch = out_ch
    return expected


def resnet_structure(
    renamed: Mapping[str, torch.Tensor], source_name: str, allow_dcn: bool = False
) -> Tuple[int, Tuple[int, ...], bool]:
    """Detect the depth from already renamed backbone keys and check that nothing is missing
    and that the channel widths are those of a standard ResNet. With ``allow_dcn``, bottlenecks
    whose ``conv2`` has a ``conv_offset_mask`` are YOLACT++ DCN blocks (plus a ``conv2.bias``)."""
    blocks: Dict[int, set] = {}
    for key in renamed:
        m = re.match(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)) - 2, set()).add(int(m.group(2)))
    if sorted(blocks) != [0, 1, 2, 3]:
        raise ValueError(f"{source_name}: expected 4 ResNet stages, found stages {sorted(blocks)}")
    counts = []
    for stage in range(4):
        if blocks[stage] != set(range(len(blocks[stage]))):
            raise ValueError(
                f"{source_name}: the blocks of stage {stage} are not numbered 0..n-1: {sorted(blocks[stage])}"
            )
        counts.append(len(blocks[stage]))
    counts = tuple(counts)
    bottleneck = "backbone.bottom_up.res2.0.conv3.weight" in renamed
    depth = RESNET_DEPTHS.get((counts, bottleneck))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(
            f"{source_name}: unsupported ResNet with {list(counts)} {kind} blocks per stage "
            f"(supported: R-18/34/50/101/152)"
        )

    expected = _expected_shapes(renamed, counts, bottleneck, allow_dcn)
    missing = [k for k in expected if k not in renamed]
    if missing:
        raise ValueError(f"{source_name}: incomplete ResNet-{depth}: missing {short_list(missing)}")
    extra = [
        k for k in renamed
        if k.startswith("backbone.bottom_up.") and k not in expected and not k.endswith(".num_batches_tracked")
    ]
    if extra:
        raise ValueError(f"{source_name}: unexpected ResNet-{depth} keys {short_list(extra)}")
    wrong = [
        f"{k} {tuple(renamed[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if tuple(renamed[k].shape) != shape
    ]
    if wrong:
        raise ValueError(
            f"{source_name}: not a standard ResNet-{depth} (grouped or widened convs, e.g. ResNeXt / "
            f"Wide ResNet, are not supported): {'; '.join(wrong[:3])}"
        )
    return depth, counts, bottleneck
