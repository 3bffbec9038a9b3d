from .trainer import YolactTrainer, create_ddp_model

__all__ = ["YolactTrainer", "create_ddp_model"]
