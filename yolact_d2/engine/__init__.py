from ..runtime.finite_loss import NonFiniteLossError
from .ddp import create_ddp_model
from .hooks import BadImageCounter
from .loaders import build_dataset_mapper
from .trainer import YolactTrainer

__all__ = ["YolactTrainer", "create_ddp_model", "NonFiniteLossError", "BadImageCounter", "build_dataset_mapper"]
