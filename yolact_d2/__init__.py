"""yolact_d2: YOLACT (Bolya et al., ICCV 2019) as Detectron2 components.

Importing the package registers the backbone, anchor generator, head, protonet and the ``Yolact``
meta-architecture with Detectron2's registries, and the bundled synthetic datasets.
"""
import warnings

# detectron2 decorates a few helpers with torch.jit.script, which torch >= 2.10 reports as
# deprecated when they are imported; the warning is not actionable for users of this package. It is
# silenced for these imports only, so the caller's warning filters stay as they were.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    from . import data  # noqa: F401  (registers datasets)
    from .config import add_yolact_config
    from .engine import YolactTrainer
    from .modeling import Yolact
    from .predictor import YolactPredictor

__version__ = "0.1.0"
__all__ = ["add_yolact_config", "Yolact", "YolactTrainer", "YolactPredictor"]
