"""Export of YOLACT's tensor-only core (ONNX, TorchScript) and an ONNX Runtime predictor.

The exported graph is ``image -> (class_probs, boxes, coefficients, prototypes)``:

* ``image``: float32 (1, 3, S, S), the resized image in ``INPUT.FORMAT`` channel order with pixel
  values 0..255 (normalisation is part of the graph), ``S = INPUT.IMAGE_SIZE``;
* ``class_probs`` (1, P, K+1) softmax (index 0 background), ``boxes`` (1, P, 4) decoded relative
  point-form boxes, ``coefficients`` (1, P, k), ``prototypes`` (1, k, S/4, S/4):
  :meth:`Yolact.inference_tensors`.

Score threshold, Fast NMS and mask assembly are data-dependent (variable numbers of boxes) and run
after the graph with the same PyTorch code as :meth:`Yolact.inference`
(:meth:`Yolact.postprocess_batch`), so an exported model gives the detections of the PyTorch model
up to the float differences of the network itself.

Two variants:

* fixed size (default): the graph is exactly ``Yolact.inference_tensors`` for ``S x S`` inputs,
  anchors and box decoding included (the anchors depend on the feature-map sizes and are
  constants of the graph). YOLACT's test resize (``INPUT.TEST_RESIZE_MODE: squash``) always gives
  ``S x S`` inputs, so one export serves every image.
* ``dynamic=True`` (ONNX only): height and width are dynamic axes. Anchors cannot be graph
  constants then, so the graph outputs ``box_deltas`` instead of ``boxes`` and the predictor
  computes the anchors for each input size (cached) and decodes, as ``Yolact`` does. Needed for
  ``INPUT.TEST_RESIZE_MODE: keep_aspect``.

YOLACT++ (deformable convolutions) exports to ONNX with the dynamo exporter at opset >= 19 (ONNX
``DeformConv``); :func:`export_onnx` checks this first (:func:`check_onnx_exportable`) and raises
:class:`DeformConvExportError` instead of writing a model ONNX Runtime cannot run. Its mask
re-scoring net runs after NMS, in PyTorch, inside :class:`YolactONNXPredictor`.
"""
import contextlib
import io
import logging
import math
import os
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from .layers.deform_conv import ONNX_DEFORM_CONV_MIN_OPSET, check_onnx_exportable
from .modeling.box_ops import decode
from .precision import choose_precision, log_choice
from .predictor import YolactPredictor
from .quantization import file_quantization, read_quantization_metadata
from .utils.errors import ConfigError, UserError, first_line

logger = logging.getLogger(__name__)

__all__ = [
    "YolactTensorCore",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "DYNAMIC_OUTPUT_NAMES",
    "DEFAULT_ONNX_OPSET",
    "export_onnx",
    "export_torchscript",
    "YolactONNXPredictor",
    "YolactTorchScriptPredictor",
    "ExportedModelError",
    "build_predictor",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("class_probs", "boxes", "coefficients", "prototypes")
DYNAMIC_OUTPUT_NAMES = ("class_probs", "box_deltas", "coefficients", "prototypes")
# DeformConv needs 19; plain YOLACT would do with less, one opset for both keeps things simple.
DEFAULT_ONNX_OPSET = max(19, ONNX_DEFORM_CONV_MIN_OPSET)


class ExportedModelError(UserError, ValueError):
    """An exported model file that does not exist, that its runtime cannot load, or that is not a
    yolact_d2 export."""

    def __init__(self, path: str, cause: str, fix: Optional[str] = "export it with yolact-export"):
        super().__init__(f"exported model {path}", cause, fix)


def _existing_file(path: str) -> str:
    if not os.path.isfile(path):
        raise ExportedModelError(path, "no such file")
    return path


class YolactTensorCore(nn.Module):
    """``image (B, 3, H, W)`` in ``INPUT.FORMAT``, 0..255 -> ``Yolact.inference_tensors`` outputs
    (``decode_boxes=False``: box deltas instead of decoded boxes, no anchors in the graph)."""

    def __init__(self, model: nn.Module, decode_boxes: bool = True):
        super().__init__()
        self.model = model
        self.decode_boxes = decode_boxes

    def forward(self, image: torch.Tensor):
        x = (image - self.model.pixel_mean) / self.model.pixel_std
        if self.decode_boxes:
            return tuple(self.model.inference_tensors(x))
        # without anchors (dynamic size): (class_probs, box_deltas, coefficients, prototypes)
        features = self.model.extract_features(x)
        class_logits, box_deltas, coefficients = self.model.head(features)
        return torch.softmax(class_logits, dim=-1), box_deltas, coefficients, self.model.protonet(features[0])


def _sample_input(model, image_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, image_size, image_size, generator=g) * 255).to(model.device)


def export_onnx(
    model: nn.Module, path: str, image_size: int, opset_version: int = DEFAULT_ONNX_OPSET, dynamic: bool = False
) -> str:
    """Write the tensor core of ``model`` (a ``Yolact`` in eval mode) as ONNX, with the dynamo
    exporter, for (1, 3, image_size, image_size) inputs or, with ``dynamic``, any height and width
    (outputs :data:`DYNAMIC_OUTPUT_NAMES`, see the module docstring). Returns ``path``."""
    check_onnx_exportable(model, opset_version=opset_version, dynamo=True)
    core = YolactTensorCore(model, decode_boxes=not dynamic).eval()
    sample = _sample_input(model, image_size)
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = {"image": {2: torch.export.Dim("height", min=32), 3: torch.export.Dim("width", min=32)}}
    # the exporter prints progress and rewrites warnings on stdout/stderr
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(
            core,
            (sample,),
            input_names=[INPUT_NAME],
            output_names=list(DYNAMIC_OUTPUT_NAMES if dynamic else OUTPUT_NAMES),
            opset_version=opset_version,
            dynamo=True,
            external_data=False,
            dynamic_shapes=dynamic_shapes,
        )
        program.optimize()
        program.save(path)
    return path


def export_torchscript(model: nn.Module, path: str, image_size: int) -> str:
    """Write the tensor core of ``model`` traced with ``torch.jit.trace`` for
    (1, 3, image_size, image_size) inputs. Returns ``path``."""
    core = YolactTensorCore(model).eval()
    sample = _sample_input(model, image_size)
    with torch.no_grad():
        traced = torch.jit.trace(core, (sample,), check_trace=False)
    traced.save(path)
    return path


class _ExportedPredictor(YolactPredictor):
    """YolactPredictor whose network runs in an exported runtime; NMS and masks stay PyTorch."""

    dynamic = False  # set by subclasses whose graph takes any image size (and outputs box deltas)

    @classmethod
    def _weights_needed_for(cls, cfg) -> bool:
        """The network runs from the exported file; the PyTorch weights only matter for YOLACT++'s
        mask re-scoring, which runs after NMS."""
        return bool(cfg.MODEL.YOLACT.MASK_IOU_ON)

    def __init__(self, cfg):
        super().__init__(cfg, precision="fp32")  # the PyTorch part (post-processing) stays float32
        self.image_size = int(self.cfg.INPUT.IMAGE_SIZE)

    def _check_mode(self):
        if not self.dynamic and self.cfg.INPUT.TEST_RESIZE_MODE != "squash":
            raise ConfigError(
                f"INPUT.TEST_RESIZE_MODE {self.cfg.INPUT.TEST_RESIZE_MODE!r}",
                f"{type(self).__name__} runs a fixed-size export, which needs INPUT.TEST_RESIZE_MODE 'squash'",
                "export with dynamic=True (--dynamic) for other modes",
            )

    def run_graph(self, image: torch.Tensor):
        """The exported graph's four outputs for a (1, 3, H, W) float image."""
        raise NotImplementedError

    def run_network(self, image: torch.Tensor):
        """(1, 3, H, W) float image -> (class_probs, boxes, coefficients, prototypes), as
        ``Yolact.inference_tensors``; a dynamic graph's box deltas are decoded here."""
        outputs = self.run_graph(image)
        if not self.dynamic:
            return outputs
        class_probs, box_deltas, coefficients, prototypes = outputs
        anchors = self._anchors(tuple(image.shape[-2:]), box_deltas.shape[1])
        return class_probs, decode(box_deltas, anchors[None], self.model.bbox_variances), coefficients, prototypes

    def _anchors(self, image_size, num_anchors: int) -> torch.Tensor:
        """Anchors for an input of ``image_size``: the level sizes follow from the input size as
        in the network (every stride-2 conv / pool maps n to ceil(n / 2))."""
        model = self.model
        shapes = model.backbone.output_shape()
        sizes = []
        for name in model.in_features:
            h, w = image_size
            for _ in range(int(math.log2(shapes[name].stride))):
                h, w = -(-h // 2), -(-w // 2)
            sizes.append((h, w))
        anchors = model.anchor_generator(sizes, image_size, device=model.device)
        if anchors.shape[0] != num_anchors:
            raise RuntimeError(
                f"the exported graph gave {num_anchors} anchors for a {image_size} input, expected "
                f"{anchors.shape[0]} from feature sizes {sizes}"
            )
        return anchors

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        with torch.inference_mode():
            return self.predict_inputs(self.preprocess(original_image))

    def predict_inputs(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        """Predictions for one model input dict (``image`` resized, ``height``, ``width``), as
        ``preprocess`` or ``YolactDatasetMapper(cfg, is_train=False)`` make it (evaluation)."""
        image = inputs["image"].to(self.model.device)
        size = tuple(image.shape[-2:])
        if not self.dynamic and size != (self.image_size, self.image_size):
            raise ValueError(f"expected a {self.image_size}x{self.image_size} resized image, got {tuple(image.shape)}")
        outputs = self.run_network(image[None])
        return self.model.postprocess_batch([inputs], [size], size, outputs)[0]


class YolactONNXPredictor(_ExportedPredictor):
    """:class:`YolactPredictor` (BGR numpy in, ``{"instances": Instances}`` out at the image
    size) running the network with ONNX Runtime from a file written by :func:`export_onnx`.

    The PyTorch model is still built from ``cfg`` (with ``cfg.MODEL.WEIGHTS``) for the
    post-processing settings and, for YOLACT++, the mask re-scoring net, which runs after NMS.
    A fixed-size export needs ``INPUT.TEST_RESIZE_MODE: squash``; a dynamic one
    (``export_onnx(..., dynamic=True)``) takes any resized size, e.g. ``keep_aspect``.

    Args:
        cfg: the config the model was exported with.
        onnx_path: the exported model.
        num_threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
        graph_optimization: ``"all"`` (default, ORT_ENABLE_ALL), ``"extended"``, ``"basic"`` or ``"none"``.

    An int8 file from :func:`yolact_d2.quantization.quantize_onnx` runs the same way;
    ``self.quantization`` is then its recorded quantisation settings (None for float32).
    """

    def __init__(self, cfg, onnx_path: str, num_threads: Optional[int] = None, graph_optimization: str = "all"):
        _existing_file(onnx_path)  # before the model is built
        super().__init__(cfg)
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[graph_optimization]
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ORT's worker threads otherwise spin-wait after every run and take the cores from the
        # PyTorch NMS and mask stages that follow (measured: masks 12 -> 54 ms at 2 threads).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        unloadable = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NoSuchFile,
                      ort_errors.NotImplemented, ort_errors.InvalidArgument)
        try:
            self.session = ort.InferenceSession(onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
        except unloadable as e:
            raise ExportedModelError(onnx_path, f"ONNX Runtime cannot load it ({first_line(e)})") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        # int8 files (yolact_d2.quantization) record how they were quantised; None for float32
        self.quantization = read_quantization_metadata(self.session.get_modelmeta().custom_metadata_map)
        if self.quantization is not None:
            q = self.quantization
            logger.info(
                "%s: int8 %s, calibrated (%s) on %s images of %s; float: %s", onnx_path, q.get("format"),
                q.get("calibration_method"), q.get("calibration_images"), q.get("calibration_dataset") or "?",
                ", ".join(q.get("excluded_scopes", [])) or "-",
            )
        self.dynamic = self.output_names == list(DYNAMIC_OUTPUT_NAMES)
        if not self.dynamic and self.output_names != list(OUTPUT_NAMES):
            raise ExportedModelError(
                onnx_path, f"not a yolact_d2 export: its outputs are {self.output_names}, not {list(OUTPUT_NAMES)}"
            )
        self._check_mode()
        shape = self.session.get_inputs()[0].shape
        if not self.dynamic and list(shape[-2:]) != [self.image_size, self.image_size]:
            raise ConfigError(
                onnx_path, f"was exported for {shape[-2:]} inputs but INPUT.IMAGE_SIZE is {self.image_size}",
                f"run it with INPUT.IMAGE_SIZE {shape[-1]}, or export it again with INPUT.IMAGE_SIZE {self.image_size}",
            )

    def run_graph(self, image: torch.Tensor):
        outputs = self.session.run(self.output_names, {INPUT_NAME: image.cpu().numpy()})
        return tuple(torch.from_numpy(o).to(self.model.device) for o in outputs)


class YolactTorchScriptPredictor(_ExportedPredictor):
    """:class:`YolactPredictor` running the network from a file written by
    :func:`export_torchscript` (same contract as :class:`YolactONNXPredictor`)."""

    def __init__(self, cfg, torchscript_path: str):
        _existing_file(torchscript_path)  # before the model is built
        super().__init__(cfg)
        self._check_mode()
        try:
            self.module = torch.jit.load(torchscript_path, map_location=self.model.device).eval()
        except RuntimeError as e:  # not a TorchScript archive (torch's message is a multi-line C++ trace)
            raise ExportedModelError(torchscript_path, f"torch.jit.load cannot load it ({first_line(e)})") from None

    def run_graph(self, image: torch.Tensor):
        return tuple(self.module(image))


def build_predictor(cfg, onnx_path: Optional[str] = None, num_threads: Optional[int] = None) -> YolactPredictor:
    """The predictor for ``cfg`` and an optional exported file, with ``MODEL.YOLACT.PRECISION_TEST``:

    * no file: :class:`YolactPredictor` (fp32, bf16, or ``auto``'s choice for this machine);
    * a float32 ONNX file, or an int8 one with ``fp32`` / ``bf16``: :class:`YolactONNXPredictor` runs it;
    * an int8 ONNX file with ``auto``: it runs when ``auto`` picks int8 (a CPU with VNNI and no AMX,
      :func:`yolact_d2.precision.choose_precision`); otherwise the PyTorch model of ``MODEL.WEIGHTS`` runs in
      ``auto``'s precision (if there are weights; else the file runs anyway). The choice is logged."""
    if not onnx_path:
        return YolactPredictor(cfg)
    _existing_file(onnx_path)
    requested = str(cfg.MODEL.YOLACT.PRECISION_TEST).lower()
    if requested == "auto" and file_quantization(onnx_path) is not None:
        choice = choose_precision("auto", cfg.MODEL.DEVICE, int8_available=True)
        if choice.precision != "int8" and cfg.MODEL.WEIGHTS:
            log_choice(choice, requested)
            logger.info("%s: not used (int8 is not the fastest here); running MODEL.WEIGHTS %s", onnx_path,
                        cfg.MODEL.WEIGHTS)
            return YolactPredictor(cfg)
        if choice.precision == "int8":
            log_choice(choice, requested)
        else:
            logger.info("%s: int8 file run although auto prefers %s (%s): MODEL.WEIGHTS is empty", onnx_path,
                        choice.precision, choice.reason)
    return YolactONNXPredictor(cfg, onnx_path, num_threads=num_threads)
