"""Mask assembly from prototypes and coefficients (sigmoid(P C^T)), the crop by the predicted box,
and the upsampling of the cropped prototype-resolution masks to binary masks at the output size.

The original upsamples every mask bilinearly (``align_corners=False``) to the whole output canvas
as floats and compares it with the threshold (the oracle in tests/reference_postprocess.py).
:func:`paste_masks_fast` gives the same binary masks but only computes the output pixels that can
be non-zero: a cropped mask is exactly zero outside its crop rectangle at prototype resolution, so
its upsampled value is zero outside a rectangle ("window") of the output, and zero is never above a
non-negative threshold. Inside the windows it evaluates the same bilinear weights as
``F.interpolate`` (same source indices and lambdas, computed in float32 the way the CPU kernel
does, width pass then height pass), batched over detections: the detections are sorted by window
width and cut into a few groups, each computed as one padded tensor. There is no Python loop over
detections, and nothing of size (N, H, W) is materialised except the bool result. Pixels could
differ from the oracle only where the interpolated value is within float rounding (~1e-7) of the
threshold (tests/test_fast_inference.py counts them: none in any case tested).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "assemble_masks",
    "crop_masks",
    "crop_keep",
    "paste_masks_fast",
    "linear_resize_table",
]


def assemble_masks(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """sigmoid(P C^T): prototypes (k, H, W), coefficients (N, k) -> soft masks (N, H, W)."""
    k, h, w = prototypes.shape
    return torch.sigmoid(coefficients @ prototypes.reshape(k, h * w)).reshape(-1, h, w)


def crop_keep(boxes: torch.Tensor, h: int, w: int, padding: int = 1, dtype=torch.float32):
    """Which rows (N, h) and columns (N, w) of an ``h`` x ``w`` mask each box keeps (bool).

    ``boxes`` are relative point-form (N, 4), possibly unordered or outside [0, 1]. Column ``c`` is
    kept iff ``max(x1*W - padding, 0) <= c < min(x2*W + padding, W)`` (float bounds, not rounded),
    same for rows, exactly as the original's ``crop``.
    """
    x1 = torch.min(boxes[:, 0], boxes[:, 2]) * w
    x2 = torch.max(boxes[:, 0], boxes[:, 2]) * w
    y1 = torch.min(boxes[:, 1], boxes[:, 3]) * h
    y2 = torch.max(boxes[:, 1], boxes[:, 3]) * h
    x1, x2 = (x1 - padding).clamp(min=0), (x2 + padding).clamp(max=w)
    y1, y2 = (y1 - padding).clamp(min=0), (y2 + padding).clamp(max=h)
    cols = torch.arange(w, device=boxes.device, dtype=dtype).view(1, w)
    rows = torch.arange(h, device=boxes.device, dtype=dtype).view(1, h)
    keep_cols = (cols >= x1[:, None]) & (cols < x2[:, None])
    keep_rows = (rows >= y1[:, None]) & (rows < y2[:, None])
    return keep_rows, keep_cols


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Zero every mask outside its box, at the masks' own resolution (see :func:`crop_keep`)."""
    n, h, w = masks.shape
    keep_rows, keep_cols = crop_keep(boxes, h, w, padding, dtype=masks.dtype)
    return masks * (keep_rows[:, :, None] & keep_cols[:, None, :]).to(masks.dtype)


def linear_resize_table(in_size: int, out_size: int, length: int, device=None):
    """Source indices and weights of 1-D linear resizing ``in_size -> out_size`` with
    ``align_corners=False``, for the first ``length`` output positions, computed as PyTorch's
    CPU ``upsample_bilinear2d`` does: float32 scale ``in/out``, source position
    ``scale*(i+0.5)-0.5`` evaluated as one fused multiply-add (done here in float64, which is
    exact for the product) and rounded to float32, clamped at 0; ``i1 = min(i0+1, in-1)``,
    ``lambda1 = src - i0``, ``lambda0 = 1 - lambda1``. (tests/test_fast_inference.py checks the
    tables against ``F.interpolate`` bit for bit.)

    Returns ``(i0, i1, lambda0, lambda1)``, each of shape (length,).
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32).double()
    dst = torch.arange(length, dtype=torch.float32) + 0.5
    src = (scale * dst.double() - 0.5).float().clamp(min=0)
    i0 = src.to(torch.int64)
    lambda1 = src - i0.to(torch.float32)
    lambda0 = 1.0 - lambda1
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return tuple(t.to(device) for t in (i0, i1, lambda0, lambda1))


def _ragged_ranges(start: torch.Tensor, stop: torch.Tensor):
    """Concatenation of ``range(start[i], stop[i])`` for all i, and the i of each element."""
    counts = (stop - start).clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(len(counts), device=start.device), counts)
    first = torch.cumsum(counts, 0) - counts  # index of each range's first element
    values = torch.arange(len(owner), device=start.device) - first[owner] + start[owner]
    return values, owner


def _first_last(keep: torch.Tensor):
    """Index of the first True and one past the last True of every row of ``keep`` (N, L);
    (0, 0) for a row without True."""
    length = keep.shape[1]
    any_true = keep.any(dim=1)
    first = keep.to(torch.uint8).argmax(dim=1)
    stop = length - keep.flip(1).to(torch.uint8).argmax(dim=1)
    return torch.where(any_true, first, 0), torch.where(any_true, stop, 0)


def paste_masks_fast(
    masks: torch.Tensor,
    keep_rows: torch.Tensor,
    keep_cols: torch.Tensor,
    canvas: Tuple[int, int],
    output_size: Tuple[int, int],
    threshold: float,
    num_groups: int = 4,
) -> torch.Tensor:
    """Binary masks (N, H, W) of ``output_size``: the (N, h, w) soft ``masks`` upsampled bilinearly
    (``align_corners=False``) to ``canvas``, the top-left ``output_size`` kept and compared with
    ``threshold`` (strict ``>``), as the original does for the whole canvas. For masks that are zero
    outside ``keep_rows x keep_cols`` (as :func:`crop_masks` makes them) and ``threshold >= 0``, only
    the output window of each mask that can be non-zero is computed.

    The bilinear resize is done as its two passes, in the order and with the weights of PyTorch's
    CPU kernel (width pass, then height pass), on ragged row lists:

    1. width pass on the source rows each crop touches plus one row either side (those are zero
       in a cropped mask and are the second tap of the output rows at the crop's edge), for the
       output columns of the mask's window;
    2. height pass for the output rows of the window (two row gathers and a weighted sum),
       thresholded and copied into the zero bool (N, H, W) result.

    The masks are sorted by window width and cut into ``num_groups`` groups; a group's windows
    are padded to its widest, so that the rows of a group form one (rows, width) tensor. Each
    window row is a contiguous run of one output row, written with one ``index_copy_`` into the
    "all runs of that width" view of the result.

    Args:
        masks: (N, h, w) cropped soft masks. keep_rows (N, h), keep_cols (N, w): their crop.
        canvas: size the masks are resized to; output_size: the top-left part that is returned.
        num_groups: number of window-width groups (a loop over groups, not over detections).
    """
    n, h, w = masks.shape
    out_h, out_w = output_size
    if threshold < 0 and n > 0:  # zeros outside the crop would be foreground: nothing to skip
        masks = F.interpolate(masks[None], size=canvas, mode="bilinear", align_corners=False)[0]
        return masks[:, :out_h, :out_w] > threshold
    result = torch.zeros((n, out_h, out_w), dtype=torch.bool, device=masks.device)
    if n == 0 or out_h == 0 or out_w == 0:
        return result
    device = masks.device
    ry0, ry1, rl0, rl1 = linear_resize_table(h, canvas[0], out_h, device)
    cx0, cx1, cl0, cl1 = linear_resize_table(w, canvas[1], out_w, device)
    # output windows: positions whose two taps touch a kept source position
    y_start, y_stop = _first_last(keep_rows[:, ry0] | keep_rows[:, ry1])
    x_start, x_stop = _first_last(keep_cols[:, cx0] | keep_cols[:, cx1])
    # source rows read by the window rows: the crop's rows and one either side
    r_first, r_stop = _first_last(keep_rows)
    has_rows = r_stop > r_first
    src_start = torch.where(has_rows, (r_first - 1).clamp(min=0), 0)
    src_stop = torch.where(has_rows, (r_stop + 1).clamp(max=h), 0)

    widths = x_stop - x_start
    nonempty = torch.nonzero((widths > 0) & (y_stop > y_start)).flatten()
    if len(nonempty) == 0:
        return result
    order = nonempty[widths[nonempty].argsort()]
    group_len = -(-len(order) // num_groups)
    groups = list(order.split(group_len))
    group_widths = torch.stack([widths[g].max() for g in groups]).tolist()
    flat_rows = masks.reshape(n * h, w)
    flat_result = result.view(-1)
    for dets, gw in zip(groups, group_widths):
        x0 = x_start[dets].clamp(max=out_w - gw)
        cols = x0[:, None] + torch.arange(gw, device=device)  # (k, gw) output columns
        # 1. width pass, (S, gw) for the S source rows of this group's masks
        src_rows, src_owner = _ragged_ranges(src_start[dets], src_stop[dets])
        rows = flat_rows.index_select(0, dets[src_owner] * h + src_rows)
        c0, c1 = cx0[cols].index_select(0, src_owner), cx1[cols].index_select(0, src_owner)
        w0, w1 = cl0[cols].index_select(0, src_owner), cl1[cols].index_select(0, src_owner)
        wide = rows.gather(1, c0) * w0 + rows.gather(1, c1) * w1
        # row of ``wide`` holding source row r of mask i: offset[i] + r
        counts = src_stop[dets] - src_start[dets]
        offset = torch.cumsum(counts, 0) - counts - src_start[dets]
        # 2. height pass, (R, gw) for the R output rows of the windows
        out_rows, owner = _ragged_ranges(y_start[dets], y_stop[dets])
        top = wide.index_select(0, offset[owner] + ry0[out_rows])
        bottom = wide.index_select(0, offset[owner] + ry1[out_rows])
        values = top * rl0[out_rows, None] + bottom * rl1[out_rows, None]
        # every window row is the run of gw pixels starting at this flat index of ``result``;
        # runs never overlap (one output row each), so writing them through the overlapping view
        # of all length-gw runs is well defined
        starts = (dets[owner] * out_h + out_rows) * out_w + x0[owner]
        flat_result.unfold(0, gw, 1).index_copy_(0, starts, values > threshold)
    return result
