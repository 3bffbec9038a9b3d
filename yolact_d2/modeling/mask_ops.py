"""Mask assembly from prototypes and coefficients (YOLACT_SPEC.md §5.2 M, §7.2)."""
import torch

__all__ = ["assemble_masks", "crop_masks"]


def assemble_masks(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """sigmoid(P C^T): prototypes (k, H, W), coefficients (N, k) -> soft masks (N, H, W)."""
    k, h, w = prototypes.shape
    return torch.sigmoid(coefficients @ prototypes.reshape(k, h * w)).reshape(-1, h, w)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Zero every mask outside its box, at the masks' own resolution.

    ``boxes`` are relative point-form (N, 4), possibly unordered or outside [0, 1]. Column ``c`` is
    kept iff ``max(x1*W - padding, 0) <= c < min(x2*W + padding, W)`` (float bounds, not rounded),
    same for rows, exactly as the original's ``crop``.
    """
    n, h, w = masks.shape
    x1 = torch.min(boxes[:, 0], boxes[:, 2]) * w
    x2 = torch.max(boxes[:, 0], boxes[:, 2]) * w
    y1 = torch.min(boxes[:, 1], boxes[:, 3]) * h
    y2 = torch.max(boxes[:, 1], boxes[:, 3]) * h
    x1, x2 = (x1 - padding).clamp(min=0), (x2 + padding).clamp(max=w)
    y1, y2 = (y1 - padding).clamp(min=0), (y2 + padding).clamp(max=h)
    cols = torch.arange(w, device=masks.device, dtype=masks.dtype).view(1, 1, w)
    rows = torch.arange(h, device=masks.device, dtype=masks.dtype).view(1, h, 1)
    keep_cols = (cols >= x1.view(n, 1, 1)) & (cols < x2.view(n, 1, 1))
    keep_rows = (rows >= y1.view(n, 1, 1)) & (rows < y2.view(n, 1, 1))
    return masks * (keep_cols & keep_rows).to(masks.dtype)
