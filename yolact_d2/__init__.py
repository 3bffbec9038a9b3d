"""yolact_d2: YOLACT (Bolya et al., ICCV 2019) as Detectron2 components.

Importing the package registers the backbone, anchor generator, head, protonet and the ``Yolact``
meta-architecture with Detectron2's registries, and the bundled synthetic datasets.
"""
from .config import add_yolact_config
from .modeling import Yolact
from . import data  # noqa: F401  (registers datasets)
from .engine import YolactTrainer
from .predictor import YolactPredictor

__version__ = "0.1.0"
__all__ = ["add_yolact_config", "Yolact", "YolactTrainer", "YolactPredictor"]
