"""DistributedDataParallel wrapper that also works for multi-process CPU (gloo) training:
Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which PyTorch rejects
for CPU modules, so ``--num-gpus 2`` with ``MODEL.DEVICE cpu`` would crash."""
import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.utils import comm

__all__ = ["create_ddp_model"]


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Wrap ``model`` in DDP when there is more than one process; ``device_ids`` only on CUDA."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)
