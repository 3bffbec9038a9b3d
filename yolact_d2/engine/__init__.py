from ..runtime.finite_loss import NonFiniteLossError
from .ddp import create_ddp_model
from .loaders import build_dataset_mapper
from .skipped_images import SkippedImages
from .trainer import YolactTrainer

__all__ = ["YolactTrainer", "create_ddp_model", "NonFiniteLossError", "SkippedImages", "build_dataset_mapper"]
