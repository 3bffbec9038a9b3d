"""yolact_d2: YOLACT (Bolya et al., ICCV 2019) as Detectron2 components.

Importing the package registers the backbone, anchor generator, head, protonet and the ``Yolact``
meta-architecture with Detectron2's registries, and the bundled synthetic datasets.
"""
import warnings

# detectron2 decorates a few helpers with torch.jit.script, which torch >= 2.10 reports as
# deprecated on every import; the warning is not actionable for users of this package.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)

from .config import add_yolact_config  # noqa: E402
from .modeling import Yolact  # noqa: E402
from . import data  # noqa: F401, E402  (registers datasets)
from .engine import YolactTrainer  # noqa: E402
from .predictor import YolactPredictor  # noqa: E402

__version__ = "0.1.0"
__all__ = ["add_yolact_config", "Yolact", "YolactTrainer", "YolactPredictor"]
