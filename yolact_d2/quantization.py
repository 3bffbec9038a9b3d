"""Static int8 quantisation of an exported YOLACT ONNX model with ONNX Runtime, for CPU inference.

Why: float32 inference is at the CPU's floor (docs/BENCHMARKS.md); int8 convolutions run faster
on CPUs with ONNX Runtime's int8 kernels. The quantised file keeps the graph's inputs and outputs,
so :class:`~yolact_d2.export.YolactONNXPredictor` runs it unchanged.

* Format: QDQ (QuantizeLinear / DequantizeLinear pairs around the quantised ops, which ONNX
  Runtime fuses into int8 kernels), per-channel symmetric int8 weights, uint8 activations.
* Calibration: :class:`DatasetCalibrationReader` feeds N images of a registered Detectron2
  dataset through the project's TEST mapper (``YolactDatasetMapper(cfg, is_train=False)``), i.e.
  exactly the resized 0..255 tensors the ONNX predictor feeds (the normalisation is in the graph).
* What stays float: every op type not in :data:`DEFAULT_OP_TYPES` (the coefficient ``Tanh``, the
  class ``Softmax``, reshapes and concatenations of the head outputs, GroupNorm's statistics),
  every op outside :data:`NETWORK_SCOPES` (box decoding: its Adds are of a quantised type) and the
  convolutions of :data:`DEFAULT_EXCLUDED_SCOPES` (the last layers of the head and protonet, whose
  outputs are the network's outputs), found by the module scopes the dynamo exporter records on
  each node (``pkg.torch.onnx.name_scopes``).
* Calibration memory: ONNX Runtime's histogram calibrators (percentile, entropy) keep every
  intermediate output of every calibration image before they build the histograms (R-101-550:
  over 24 GB for 64 images). :func:`histogram_ranges` computes the same ranges image by image in
  two passes (global value ranges, then histograms with those edges, summed), so the memory is
  that of one image, and hands them to ``quantize_static`` as a calibration cache. The ranges are
  identical to ORT's single-pass ones (tests/test_quantization.py compares them exactly).
* Calibration method: ``percentile`` (99.999 %) by default. On the trained main-job model it kept
  mask and box AP within 0.3 of float32, as MinMax did, with the higher matched mask IoU
  (docs/EXPORT.md, "int8", has the comparison of methods and float-kept layer sets); ``entropy``
  clipped too much there.
* The choice is recorded in the model's ``metadata_props`` under :data:`METADATA_KEY` (JSON), which
  ``YolactONNXPredictor`` reads (``predictor.quantization``) and logs.
"""
import ast
import contextlib
import io
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from .data.dataset_mapper import YolactDatasetMapper
from .utils.errors import ConfigError

__all__ = [
    "METADATA_KEY",
    "CALIBRATION_METHODS",
    "DEFAULT_OP_TYPES",
    "DEFAULT_EXCLUDED_SCOPES",
    "DatasetCalibrationReader",
    "NETWORK_SCOPES",
    "nodes_in_scopes",
    "nodes_outside_scopes",
    "quantize_onnx",
    "histogram_ranges",
    "read_quantization_metadata",
    "is_quantized_as",
    "file_quantization",
    "match_detections",
    "detection_agreement",
]

METADATA_KEY = "yolact_d2.quantization"
# Bumped when the same settings give a different file; 2: post-processing (box decoding) stays float.
QUANTIZER_VERSION = 2
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Ops quantised to int8; ONNX Runtime has int8 kernels (or drops the QDQ pairs) for all of them.
DEFAULT_OP_TYPES = ("Conv", "Relu", "Add", "MaxPool", "Resize")
# Modules whose convolutions stay float: the prediction layers (the network's outputs).
DEFAULT_EXCLUDED_SCOPES = (
    "model.head.bbox_pred",
    "model.head.cls_score",
    "model.head.coeff_pred",
    "model.protonet.predictor",
)
# The network whose ops are quantised. Everything outside it is post-processing on the head's outputs
# (box decoding against the anchors, softmax, tanh) and stays float: box decoding has Adds, and
# uint8 box coordinates would move every box edge by up to 1/255 of the coordinate range.
NETWORK_SCOPES = ("model.backbone", "model.head", "model.protonet")
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"


class DatasetCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over ``num_images`` images of ``dataset_name``, spread
    evenly over the dataset, each mapped by the YOLACT test mapper of ``cfg`` (the predictor's
    preprocessing) into the exported graph's ``image`` input, (1, 3, H, W) float32 0..255."""

    def __init__(self, cfg, dataset_name: str, num_images: int, input_name: str = "image"):
        from detectron2.data import DatasetCatalog

        if dataset_name not in DatasetCatalog.list():
            names = ", ".join(n for n in DatasetCatalog.list() if n.startswith("yolact_"))
            raise ConfigError(
                f"calibration dataset {dataset_name!r}", "is not registered",
                f"registered yolact_d2 datasets: {names}; add your own with DATASETS.COCO_INSTANCES",
            )
        if num_images < 1:
            raise ConfigError("--calibration-images", f"must be >= 1, got {num_images}")
        dicts = DatasetCatalog.get(dataset_name)
        if not dicts:
            raise ConfigError(f"calibration dataset {dataset_name!r}", "has no images", "use your training set")
        picks = np.unique(np.linspace(0, len(dicts) - 1, min(num_images, len(dicts))).round().astype(int))
        self.dicts = [dicts[i] for i in picks]
        self.mapper = YolactDatasetMapper(cfg, is_train=False)
        self.input_name = input_name
        self._next = 0

    def __len__(self):
        return len(self.dicts)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._next >= len(self.dicts):
            return None
        image = self.mapper(self.dicts[self._next])["image"]
        self._next += 1
        return {self.input_name: image[None].numpy().astype(np.float32)}

    def rewind(self):
        self._next = 0


def _module_scopes(node) -> List[str]:
    """The module paths the dynamo exporter recorded for ``node`` (outermost first)."""
    meta = {p.key: p.value for p in node.metadata_props}
    return ast.literal_eval(meta[_NAME_SCOPES]) if _NAME_SCOPES in meta else []


def _in_scope(module_scopes: Sequence[str], scope: str) -> bool:
    return any(s == scope or s.startswith(scope + ".") for s in module_scopes)


def nodes_in_scopes(model, scopes: Sequence[str], op_types: Sequence[str] = DEFAULT_OP_TYPES) -> List[str]:
    """Names of the nodes of ``model`` (onnx.ModelProto) of ``op_types`` exported from a module
    in ``scopes`` or below it (module paths as in ``YolactTensorCore``: ``model.head.cls_score``,
    or ``model.backbone.lateral_convs`` for all of its convolutions). A scope that matches no
    node is an error (a misspelt scope would otherwise quantise what the caller meant to keep float)."""
    scopes = list(scopes)
    names, matched = [], set()
    for node in model.graph.node:
        if node.op_type in op_types:
            hits = {w for w in scopes if _in_scope(_module_scopes(node), w)}
            if hits:
                names.append(node.name)
                matched |= hits
    missing = [w for w in scopes if w not in matched]
    if missing:
        raise ValueError(f"no {'/'.join(op_types)} node of the module scope(s) {missing} in the ONNX model; "
                         "scopes are module paths such as model.head.cls_score (see docs/EXPORT.md, 'int8')")
    return names


def nodes_outside_scopes(model, scopes: Sequence[str], op_types: Sequence[str] = DEFAULT_OP_TYPES) -> List[str]:
    """Names of the nodes of ``model`` of ``op_types`` exported from no module in or below ``scopes``."""
    return [node.name for node in model.graph.node
            if node.op_type in op_types and not any(_in_scope(_module_scopes(node), w) for w in scopes)]


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if name.lower() not in methods:
        raise ConfigError("calibration method", f"unknown: {name!r}", f"use one of {', '.join(CALIBRATION_METHODS)}")
    return methods[name.lower()]


# Entropy calibration's histogram: 2048 bins searched for the 128-bin window of least KL divergence,
# the usual choice for int8 (TensorRT's). ``quantize_static`` runs ORT's entropy calibrator with 128
# and 128, which leaves the search one candidate, the full range: the same scales as MinMax.
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128


def _histogram_options(method: str, percentile: float) -> Dict[str, object]:
    """``create_calibrator`` options of a histogram method: percentile as ``quantize_static`` runs it
    (its defaults: symmetric, 2048 bins), entropy with our bins (:data:`ENTROPY_BINS`)."""
    if method == "percentile":
        return {"percentile": percentile}
    return {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}


def histogram_ranges(float_path: str, reader, op_types: Sequence[str], method: str, work_dir: str,
                     percentile: float = 99.999):
    """The activation ranges (ORT ``TensorsData``) that ONNX Runtime's ``percentile`` or ``entropy``
    calibrator computes for ``float_path`` over all images of ``reader``, with the memory of one image.

    ORT's ``HistogramCalibrater.collect_data`` keeps every calibrated tensor of every image and then
    histograms their concatenation (range from its min to its max, fixed number of bins). Here pass 1
    runs the images one at a time and keeps only each tensor's extremes; pass 2 runs them again and sums
    per-image histograms over those same edges. A histogram with fixed edges counts element by element,
    so the sums equal ORT's histograms exactly, and ORT's own ``HistogramCollector`` turns them into
    ranges. (ORT's ``CalibMaxIntermediateOutputs`` option applies to MinMax only, whose calibrator
    keeps per-image minima and maxima, not whole tensors.)"""
    from onnxruntime.quantization.calibrate import HistogramCollector, create_calibrator

    calibrator = create_calibrator(
        float_path, list(op_types), augmented_model_path=os.path.join(work_dir, "augmented.onnx"),
        calibrate_method=_calibration_method(method), extra_options=_histogram_options(method, percentile),
    )
    session = calibrator.infer_session
    wanted = [(i, o.name) for i, o in enumerate(session.get_outputs()) if o.name in calibrator.tensors_to_calibrate]
    symmetric = calibrator.symmetric and method == "percentile"  # ORT histograms |x| for symmetric percentile

    def outputs():
        reader.rewind()
        while True:
            inputs = reader.get_next()
            if not inputs:
                return
            values = session.run(None, inputs)
            yield {name: values[i].ravel() for i, name in wanted}
            del values

    # pass 1: per tensor, the extremes of the values (and of |values| for the symmetric histogram)
    extremes = {}
    for image in outputs():
        for name, x in image.items():
            lo, hi = np.nanmin(x), np.nanmax(x)
            if symmetric:
                a = np.absolute(x)
                lo_a, hi_a = a.min(), a.max()
            else:
                lo_a = hi_a = None
            if name in extremes:
                e = extremes[name]
                lo, hi = min(e[0], lo), max(e[1], hi)
                if symmetric:
                    lo_a, hi_a = min(e[2], lo_a), max(e[3], hi_a)
            extremes[name] = (lo, hi, lo_a, hi_a)
    if not extremes:
        raise ValueError("no calibration data")
    # pass 2: histograms over the edges ORT would have chosen for all images at once
    edges_of = {}
    for name, (lo, hi, lo_a, hi_a) in extremes.items():
        if symmetric:
            edges_of[name] = (lo_a, hi_a)
        else:
            threshold = np.array(max(abs(lo), abs(hi)), dtype=lo.dtype)
            edges_of[name] = (-threshold, threshold)
    hists = {}
    for image in outputs():
        for name, x in image.items():
            values = np.absolute(x) if symmetric else x
            hist, edges = np.histogram(values, calibrator.num_bins, range=edges_of[name])
            if name in hists:
                hists[name][0] += hist
            else:
                hists[name] = [hist, edges.astype(x.dtype)]
    collector = HistogramCollector(
        method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
        num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
        scenario=calibrator.scenario,
    )
    for name, (hist, edges) in hists.items():
        lo, hi = extremes[name][:2]
        # ORT's entries: (hist, edges, min, max) for |x|, (hist, edges, min, max, threshold) for x
        collector.histogram_dict[name] = (hist, edges, lo, hi) + (() if symmetric else (edges_of[name][1],))
    calibrator.collector = collector
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its progress
        return calibrator.compute_data()


def quantize_onnx(
    float_path: str,
    output_path: str,
    reader: DatasetCalibrationReader,
    method: str = "percentile",
    excluded_scopes: Sequence[str] = DEFAULT_EXCLUDED_SCOPES,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    percentile: float = 99.999,
    dataset_name: str = "",
) -> Dict[str, object]:
    """Write the static QDQ int8 version of the float model ``float_path`` (from
    :func:`~yolact_d2.export.export_onnx`) to ``output_path``, calibrated with ``reader``.
    Returns the recorded metadata (also in the file under :data:`METADATA_KEY`)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibrate_method = _calibration_method(method)
    model = onnx.load(float_path)
    try:
        excluded = nodes_in_scopes(model, excluded_scopes, op_types)
    except ValueError as e:
        raise ValueError(f"{float_path}: {e}") from None
    post_processing = nodes_outside_scopes(model, NETWORK_SCOPES, op_types)
    extra = {"CalibPercentile": percentile} if method.lower() == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="yolact_int8_") as tmp:
        cache = None
        if method.lower() in ("percentile", "entropy"):  # bounded memory: histogram_ranges
            from onnxruntime.quantization.calibrate import save_tensors_data

            cache = os.path.join(tmp, "ranges.json")
            save_tensors_data(histogram_ranges(float_path, reader, op_types, method.lower(), tmp, percentile), cache)
            reader.rewind()
        quantize_static(
            float_path, output_path, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded + post_processing, calibrate_method=calibrate_method, extra_options=extra,
            calibration_cache_path=cache,
        )
    info = {
        "quantizer_version": QUANTIZER_VERSION,
        "format": "QDQ", "weights": "int8 per-channel symmetric", "activations": "uint8 asymmetric",
        "calibration_method": method.lower(), "calibration_images": len(reader),
        "calibration_dataset": dataset_name, "op_types": list(op_types),
        "excluded_scopes": list(excluded_scopes), "excluded_nodes": excluded,
        "network_scopes": list(NETWORK_SCOPES), "post_processing_nodes": post_processing,
    }
    if method.lower() == "percentile":
        info["percentile"] = percentile
    if method.lower() == "entropy":
        info["histogram_bins"], info["quantized_bins"] = ENTROPY_BINS, ENTROPY_QUANTIZED_BINS
    quantized = onnx.load(output_path)
    entry = quantized.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(quantized, output_path)
    return info


def read_quantization_metadata(custom_metadata: Dict[str, str]) -> Optional[Dict[str, object]]:
    """The quantisation record from an ONNX Runtime session's ``custom_metadata_map`` (None for a float model)."""
    text = custom_metadata.get(METADATA_KEY)
    return None if text is None else json.loads(text)


def file_quantization(path: str) -> Optional[Dict[str, object]]:
    """The quantisation record of the ONNX file ``path`` (None for a float file or one that is no ONNX
    model: loading it later says why)."""
    import onnx

    try:
        props = onnx.load(path, load_external_data=False).metadata_props
    except Exception:  # noqa: BLE001 (protobuf's decode errors have no common public type)
        return None
    return read_quantization_metadata({p.key: p.value for p in props})


def is_quantized_as(path: str, method: str, calibration_images: int, dataset_name: str,
                    excluded_scopes: Sequence[str] = DEFAULT_EXCLUDED_SCOPES) -> bool:
    """Whether the int8 file ``path`` was made by this version of :func:`quantize_onnx` with these
    settings, so that a tool may reuse it instead of quantising again (False if it is missing)."""
    if not os.path.isfile(path):
        return False
    info = file_quantization(path)
    return info is not None and info.get("quantizer_version") == QUANTIZER_VERSION and {
        k: info.get(k) for k in ("calibration_method", "calibration_images", "calibration_dataset", "excluded_scopes")
    } == {"calibration_method": method.lower(), "calibration_images": calibration_images,
          "calibration_dataset": dataset_name, "excluded_scopes": list(excluded_scopes)}


def _box_iou(a, b):
    import torch

    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter).clamp(min=1e-9)


def match_detections(reference, other, min_box_iou: float = 0.5):
    """Greedy one-to-one matching of two ``Instances`` of the same image (e.g. float32 and
    int8): in decreasing reference score, each reference detection takes the unused detection
    of ``other`` of the same class with the highest box IoU (>= ``min_box_iou``). Returns
    index pairs ``(i, j)``."""
    if len(reference) == 0 or len(other) == 0:
        return []
    ious = _box_iou(reference.pred_boxes.tensor.float(), other.pred_boxes.tensor.float())
    ious[reference.pred_classes[:, None] != other.pred_classes[None, :]] = -1
    pairs, used = [], set()
    for i in reference.scores.argsort(descending=True).tolist():
        row = ious[i].clone()
        if used:
            row[list(used)] = -1
        j = int(row.argmax())
        if row[j] >= min_box_iou:
            used.add(j)
            pairs.append((i, j))
    return pairs


def detection_agreement(reference, other, min_score: float = 0.3) -> Dict[str, object]:
    """How ``other`` reproduces the reference's detections scoring >= ``min_score``: the number
    of those, how many are matched (:func:`match_detections`), and per match the mask IoU and
    the absolute score difference (lists, to be pooled over images)."""
    keep = reference.scores >= min_score
    reference = reference[keep]
    pairs = match_detections(reference, other)
    ious, diffs = [], []
    for i, j in pairs:
        a, b = reference.pred_masks[i], other.pred_masks[j]
        union = (a | b).sum().item()
        ious.append(1.0 if union == 0 else (a & b).sum().item() / union)
        diffs.append(abs(float(reference.scores[i]) - float(other.scores[j])))
    return {"detections": len(reference), "matched": len(pairs), "mask_iou": ious, "score_diff": diffs}
