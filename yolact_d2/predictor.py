"""Single-image inference with YOLACT's own test-time resize.

:class:`YolactPredictor` follows the contract of Detectron2's ``DefaultPredictor`` (cfg in,
BGR ``np.ndarray`` in, ``{"instances": Instances}`` out), but resizes the image the way the
YOLACT test mapper does (``build_yolact_test_augmentation``: squash to ``INPUT.IMAGE_SIZE``
square, or ``keep_aspect`` per ``INPUT.TEST_RESIZE_MODE``) instead of ``ResizeShortestEdge``, so
a predictor result equals the model's output on ``YolactDatasetMapper(cfg, is_train=False)``'s
dict for the same pixels.
"""
import logging
from typing import Any, Dict, Optional

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model

from .data.transforms import build_yolact_test_augmentation
from .modeling.optimize import optimize_for_inference
from .precision import choose_precision, log_choice, torch_dtype
from .runtime.checkpointer import AtomicDetectionCheckpointer
from .runtime.command_line_keys import set_on_command_line
from .runtime.run_checks import check_class_names, check_input_fits_model, check_yolact_config
from .runtime.safe_load import trusted_weights_file
from .runtime.weights_catalog import is_random_weights
from .utils.errors import ConfigError

__all__ = ["YolactPredictor"]

logger = logging.getLogger(__name__)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"an object of type {type(x).__module__}.{type(x).__qualname__}"


def _as_bgr_image(image: Any) -> np.ndarray:
    """Validate a predictor input and return it as an H x W x 3 array (same dtype, BGR).

    Accepted: H x W x 3 (BGR), H x W (grayscale, replicated to 3 channels), H x W x 1 (same),
    H x W x 4 (BGRA as ``cv2.imread(..., cv2.IMREAD_UNCHANGED)`` returns: the alpha channel is
    dropped, the colours are used as they are, not composited onto a background).
    """
    if image is None:
        raise ValueError(
            "YolactPredictor expects an H x W x 3 BGR image (numpy array, as returned by "
            "cv2.imread), got None (cv2.imread returns None when it cannot read a file)."
        )
    if not isinstance(image, np.ndarray):
        hint = ""
        if type(image).__module__.startswith("torch"):
            hint = " For a torch tensor, pass image.permute(1, 2, 0).cpu().numpy() (H x W x C, 0..255)."
        elif type(image).__module__.startswith("PIL"):
            hint = " For a PIL image, pass np.asarray(image)[:, :, ::-1] (RGB to BGR)."
        raise ValueError(
            "YolactPredictor expects an H x W x 3 BGR image as a numpy array (as returned by "
            f"cv2.imread), got {_describe(image)}.{hint}"
        )
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise ValueError(
            "YolactPredictor expects a numeric image (uint8 0..255, as returned by cv2.imread), "
            f"got {_describe(image)}."
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(
            "YolactPredictor expects an H x W x 3 BGR image (or H x W grayscale), got "
            f"{_describe(image)}."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"YolactPredictor got an empty image: {_describe(image)}.")
    if image.dtype != np.uint8:
        low, high = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            hint = ""
            if np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize >= 2:
                hint = " A 16-bit image needs converting first, e.g. (image / 257).astype(np.uint8)."
            raise ValueError(
                "YolactPredictor expects pixel values in 0..255, got values from "
                f"{low:g} to {high:g} in {_describe(image)}.{hint}"
            )
        if np.issubdtype(image.dtype, np.floating) and high <= 1.0 and high > 0:
            # A 0..1 float image read as 0..255 is near-black and still gives confident detections.
            raise ValueError(
                f"YolactPredictor expects pixel values in 0..255, got a float image with values from {low:g} to "
                f"{high:g} ({_describe(image)}), which looks like a 0..1 image. Convert it first: "
                "(image * 255).astype(np.uint8), or pass image * 255."
            )
    channels = image.shape[2]
    if channels not in (1, 3, 4) and image.shape[0] in (1, 3, 4):
        raise ValueError(
            f"YolactPredictor expects an H x W x C image, got {_describe(image)}, which looks like C x H x W. "
            "Pass image.transpose(1, 2, 0)."
        )
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3:
        return image
    if channels == 4:
        return image[:, :, :3]
    raise ValueError(
        "YolactPredictor expects 3 (BGR), 1 (grayscale) or 4 (BGRA) channels, got "
        f"{_describe(image)}."
    )


class YolactPredictor:
    """End-to-end YOLACT inference on one image, like Detectron2's ``DefaultPredictor``.

    ``__init__`` clones ``cfg``, builds the model (``build_model``) in eval mode, loads
    ``cfg.MODEL.WEIGHTS`` with ``AtomicDetectionCheckpointer`` in inference mode (a checkpoint that
    leaves any parameter uninitialised, or holds NaN / Inf, raises; an empty MODEL.WEIGHTS raises,
    ``MODEL.WEIGHTS random`` keeps the random initialisation on purpose). The class count comes from
    the classes the checkpoint records unless ``MODEL.YOLACT.NUM_CLASSES`` is given on the command
    line (``setup_cfg``'s overrides); they label the detections too when ``DATASETS.TEST`` comes from
    the config file and has other classes (docs/RELIABILITY.md). It then applies the inference-only rewrites
    ``MODEL.YOLACT.FUSE_BN_TEST`` / ``CHANNELS_LAST_TEST`` (BN folded into convs, channels-last
    layout: same function up to float rounding, :mod:`yolact_d2.modeling.optimize`), runs the
    network in the precision of ``precision`` or ``MODEL.YOLACT.PRECISION_TEST`` (``fp32``, ``bf16``,
    ``auto``: :mod:`yolact_d2.precision`; the chosen one is ``self.precision``) and builds
    the YOLACT test-time resize (:func:`~yolact_d2.data.transforms.build_yolact_test_augmentation`).

    ``__call__(original_image)`` takes an image in **BGR** order, as ``cv2.imread`` returns it:

    * H x W x 3 (BGR), normally uint8 0..255. Other integer / float dtypes are converted to
      float32 without rescaling, so their values must be in 0..255 too (values outside, e.g. a
      16-bit image, or NaN raise ``ValueError``). A float image whose values are all in (0, 1]
      is a 0..1 image by mistake and raises ``ValueError`` showing the conversion;
    * H x W or H x W x 1 grayscale: replicated to 3 channels;
    * H x W x 4 (BGRA, ``cv2.IMREAD_UNCHANGED``): the alpha channel is dropped (the colour
      channels are used as they are, nothing is composited);
    * anything else (not a numpy array, other number of dimensions or channels, an empty image,
      a non-numeric dtype) raises ``ValueError`` describing what was received.

    The image is converted to ``cfg.INPUT.FORMAT``, resized by the YOLACT test augmentation,
    turned into a float32 CHW tensor and run under ``torch.inference_mode()`` with
    ``height``/``width`` of the original, so the returned ``{"instances": Instances}`` (on
    ``cfg.MODEL.DEVICE``) has ``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_masks``
    (bool, N x H x W) at the original image size.

    Scores are not re-thresholded after NMS (``MODEL.YOLACT.SCORE_THRESH_TEST`` is applied
    before it), so filter ``instances[instances.scores > t]`` for display.

    Attributes:
        cfg: the cloned config. model: the ``Yolact`` model. aug: the test-time augmentations.
        metadata: ``MetadataCatalog.get(cfg.DATASETS.TEST[0])`` when ``DATASETS.TEST`` is not
            empty (as ``DefaultPredictor``), else None.
        class_names: the training classes recorded in the checkpoint (trainer checkpoints), else None.
    """

    def __init__(self, cfg, precision: Optional[str] = None):
        self.cfg = cfg.clone()  # the model may modify its cfg
        check_yolact_config(self.cfg)  # first: builds YOLACT (other errors would describe another model), device
        weights = self.cfg.MODEL.WEIGHTS
        if (is_random_weights(weights) and self._weights_needed_for(self.cfg)
                and not set_on_command_line(self.cfg, "MODEL.WEIGHTS")):
            # a config file's "random" (the synthetic config trains from scratch) is no opt-in for inference
            raise ConfigError(
                "MODEL.WEIGHTS random (from the config file)", "inference would run an untrained model",
                fix="give MODEL.WEIGHTS (or --weights) path/to/model_final.pth; MODEL.WEIGHTS random on the command "
                "line runs an untrained model on purpose",
            )
        # inference: every parameter must come from the checkpoint; errors name the file
        checkpointer = AtomicDetectionCheckpointer(
            torch.nn.Module(), trusted_file=trusted_weights_file(self.cfg), strict=True
        )
        self.class_names = None
        if not is_random_weights(weights) and (weights or self._weights_needed_for(self.cfg)):
            # the training classes recorded in the checkpoint (trainer checkpoints), read before the
            # model is built: they give the class count when the command line does not
            self.class_names = checkpointer.read(weights).get("thing_classes")
            self._adopt_checkpoint_classes(weights)
        self.model = build_model(self.cfg)  # its modules check the keys they read
        check_input_fits_model(self.cfg, self.model)
        self.model.eval()
        checkpointer.model = self.model
        if weights or self._weights_needed_for(self.cfg):
            checkpointer.load(weights)
        else:
            logger.info("MODEL.WEIGHTS is empty: the PyTorch weights are not used by this exported model")
        self.metadata = self._metadata(weights)
        # inference-only rewrites (same function, float rounding only): MODEL.YOLACT.*_TEST
        y = self.cfg.MODEL.YOLACT
        self.precision = self._choose_precision(precision)
        try:
            optimize_for_inference(self.model, fuse_bn=y.FUSE_BN_TEST, channels_last=y.CHANNELS_LAST_TEST,
                                   dtype=torch_dtype(self.precision))
        except ValueError as e:  # a precision this model cannot run in (YOLACT++'s deformable convs)
            raise ConfigError("MODEL.YOLACT.PRECISION_TEST", f"{self.precision}: {e}", "use fp32") from None
        self.aug = T.AugmentationList(build_yolact_test_augmentation(self.cfg))
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ConfigError(
                f"INPUT.FORMAT {self.input_format!r}", "YolactPredictor supports INPUT.FORMAT 'RGB' or 'BGR'",
                fix="use RGB or BGR, the channel order the model was trained with",
            )

    def _choose_precision(self, precision: Optional[str]) -> str:
        """The network's precision (``precision`` or ``MODEL.YOLACT.PRECISION_TEST``; ``auto`` resolved
        for this device, :mod:`yolact_d2.precision`), logged with the reason."""
        requested = precision or self.cfg.MODEL.YOLACT.PRECISION_TEST
        choice = choose_precision(requested, self.model.device)
        if choice.precision != "fp32" or requested != "fp32":
            log_choice(choice, requested)
        return choice.precision

    @classmethod
    def _weights_needed_for(cls, cfg) -> bool:
        """Whether the PyTorch weights compute anything (always, for this predictor)."""
        return True

    def _adopt_checkpoint_classes(self, weights: str) -> None:
        """MODEL.YOLACT.NUM_CLASSES from the checkpoint's recorded classes unless the command line
        sets it: the config file of another run (or the bundled one) need not know the count. A count
        given on the command line that disagrees is left for the load to refuse, naming both."""
        names, y = self.class_names, self.cfg.MODEL.YOLACT
        if not names or len(names) == y.NUM_CLASSES or set_on_command_line(self.cfg, "MODEL.YOLACT.NUM_CLASSES"):
            return
        logger.warning(
            f"MODEL.YOLACT.NUM_CLASSES {y.NUM_CLASSES} (config file) -> {len(names)}: the classes recorded in "
            f"{weights} ({', '.join(map(str, names[:8]))}{', ...' if len(names) > 8 else ''})"
        )
        frozen = self.cfg.is_frozen()
        self.cfg.defrost()
        y.NUM_CLASSES = len(names)
        if frozen:
            self.cfg.freeze()

    def _metadata(self, weights: str):
        """``MetadataCatalog.get(DATASETS.TEST[0])``, checked against the checkpoint's classes. When
        they differ: an error if DATASETS.TEST was given on the command line, else (the config
        file's test set, e.g. of another run) the checkpoint's names label the detections."""
        test_sets = self.cfg.DATASETS.TEST
        if not len(test_sets):
            return None
        if self.class_names and not set_on_command_line(self.cfg, "DATASETS.TEST"):
            classes = MetadataCatalog.get(test_sets[0]).get("thing_classes", None)
            if classes is not None and list(classes) != list(self.class_names):
                logger.warning(
                    f"DATASETS.TEST[0] '{test_sets[0]}' (config file) has other classes than {weights}: "
                    "labelling with the checkpoint's classes"
                )
                return Metadata(name=f"{weights} classes", thing_classes=list(self.class_names))
        check_class_names(self.class_names, f"MODEL.WEIGHTS {weights}", test_sets[:1])
        return MetadataCatalog.get(test_sets[0])

    def preprocess(self, original_image: np.ndarray) -> Dict[str, Any]:
        """The model input dict (``image``, ``height``, ``width``) for one BGR image."""
        image = _as_bgr_image(original_image)
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        self.aug(aug_input)
        resized = np.asarray(aug_input.image).astype(np.float32, copy=False)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor.to(self.model.device), "height": height, "width": width}

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """Predictions for one BGR image; see the class docstring."""
        with torch.inference_mode():
            inputs = self.preprocess(original_image)
            return self.model([inputs])[0]
