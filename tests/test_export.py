"""Export of the tensor core (ONNX via the dynamo exporter, TorchScript via tracing) and the
exported-runtime predictors, against the PyTorch YolactPredictor.

Tiny R-18 model at 160 px with randomly initialised weights conditioned to behave like a trained
model (yolact_d2.testing.condition_random_model: realistic activations, ~all anchors above
the 0.05 score threshold, 100 detections per image, masks with content), on rendered synthetic
images. Parity: same number of detections and classes, boxes within 1e-3 relative, mask IoU
>= 0.99 for every detection.
"""
import contextlib
import io

import pytest
import torch

from conftest import tiny_cfg, yolact_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 160


def _images():
    from yolact_d2.data.datasets.synthetic import render_synthetic_sample

    # different sizes and aspect ratios (keep_aspect then gives different network input sizes)
    return [render_synthetic_sample(3, "val", i, image_size=((120, 200), (150, 260)))["image"] for i in range(3)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(cfg with the conditioned weights, onnx path, torchscript path)."""
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import export_onnx, export_torchscript
    from yolact_d2.testing import save_conditioned_random_weights

    pytest.importorskip("onnxscript")
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    # sub-pixel boxes, so that box parity is not hidden by truncation to integers
    cfg = tiny_cfg(num_classes=6, image_size=SIZE, opts=["MODEL.YOLACT.TRUNCATE_BOXES_TEST", False])
    cfg.MODEL.WEIGHTS = save_conditioned_random_weights(cfg, _images()[:2], str(tmp / "model.pth"))
    model = YolactPredictor(cfg).model  # BN fused, channels-last: what users export
    onnx_path = export_onnx(model, str(tmp / "model.onnx"), SIZE)
    ts_path = export_torchscript(model, str(tmp / "model.pt"), SIZE)
    return cfg, onnx_path, ts_path


def _mask_iou(a, b):
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _match(a, b):
    """Pairs (i, j) of detections of ``a`` and ``b`` with the same class, boxes within 1e-3
    relative and scores within 1e-4. Detections are sorted by score, and scores that differ by
    float rounding may swap places, so detections are matched rather than compared by index."""
    box_tol = 1e-3 * a.pred_boxes.tensor.abs().clamp(min=1) + 1e-3
    pairs, used = [], set()
    for i in range(len(a)):
        close = (
            (b.pred_classes == a.pred_classes[i])
            & ((b.pred_boxes.tensor - a.pred_boxes.tensor[i]).abs() <= box_tol[i]).all(1)
            & ((b.scores - a.scores[i]).abs() <= 1e-4)
        )
        js = [j for j in torch.nonzero(close).flatten().tolist() if j not in used]
        if js:
            j = min(js, key=lambda j: (b.pred_boxes.tensor[j] - a.pred_boxes.tensor[i]).abs().sum().item())
            used.add(j)
            pairs.append((i, j))
    return pairs


def _assert_parity(reference, other):
    """Every detection has its counterpart (same class, box within 1e-3 relative, mask IoU >=
    0.99), except at most a detection whose score ties the 100th one within 1e-4 (which of two
    near-equal detections makes the cut is float noise)."""
    fg = 0
    for image in _images():
        a, b = reference(image)["instances"], other(image)["instances"]
        assert a.image_size == b.image_size == image.shape[:2]
        assert len(a) == len(b) == 100  # conditioned weights: real detections, the maximum number
        pairs = _match(a, b)
        unmatched = sorted(set(range(len(a))) - {i for i, _ in pairs})
        assert all(a.scores[i] - a.scores[-1] <= 1e-4 for i in unmatched), unmatched
        assert len(unmatched) <= 1
        i, j = (torch.tensor(x) for x in zip(*pairs))
        torch.testing.assert_close(b.scores[j], a.scores[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.pred_boxes.tensor[j], a.pred_boxes.tensor[i], rtol=1e-3, atol=1e-3)
        assert _mask_iou(a.pred_masks[i], b.pred_masks[j]).min().item() >= 0.99
        fg += int(a.pred_masks.sum())
    assert fg > 1000  # the masks compared are not empty


def test_onnx_predictor_matches_pytorch(exported):
    ort = pytest.importorskip("onnxruntime")
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import OUTPUT_NAMES, YolactONNXPredictor

    cfg, onnx_path, _ = exported
    reference = YolactPredictor(cfg)
    onnx = YolactONNXPredictor(cfg, onnx_path, num_threads=1)
    assert [o.name for o in onnx.session.get_outputs()] == list(OUTPUT_NAMES)
    assert isinstance(onnx.session, ort.InferenceSession)
    _assert_parity(reference, onnx)


def test_torchscript_predictor_matches_pytorch(exported):
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import YolactTorchScriptPredictor

    cfg, _, ts_path = exported
    _assert_parity(YolactPredictor(cfg), YolactTorchScriptPredictor(cfg, ts_path))


def test_exported_predictors_reject_other_sizes(exported, tmp_path):
    pytest.importorskip("onnxruntime")
    from yolact_d2.export import YolactONNXPredictor

    cfg, onnx_path, _ = exported
    other = cfg.clone()
    other.INPUT.IMAGE_SIZE = SIZE + 32
    with pytest.raises(ValueError, match="exported for"):
        YolactONNXPredictor(other, onnx_path)
    other = cfg.clone()
    other.INPUT.TEST_RESIZE_MODE = "keep_aspect"
    with pytest.raises(ValueError, match="squash.*dynamic"):
        YolactONNXPredictor(other, onnx_path)


def test_dynamic_onnx_export_with_keep_aspect(exported, tmp_path):
    """--dynamic: one graph for every input size (box deltas out, anchors computed per size by
    the predictor); with INPUT.TEST_RESIZE_MODE keep_aspect the images of different aspect ratios
    give inputs of different sizes."""
    pytest.importorskip("onnxruntime")
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import DYNAMIC_OUTPUT_NAMES, YolactONNXPredictor, export_onnx

    cfg, _, _ = exported
    cfg = cfg.clone()
    cfg.INPUT.TEST_RESIZE_MODE = "keep_aspect"
    reference = YolactPredictor(cfg)
    path = export_onnx(reference.model, str(tmp_path / "dynamic.onnx"), SIZE, dynamic=True)
    onnx = YolactONNXPredictor(cfg, path, num_threads=1)
    assert onnx.dynamic and onnx.output_names == list(DYNAMIC_OUTPUT_NAMES)
    sizes = {tuple(onnx.preprocess(im)["image"].shape[-2:]) for im in _images()}
    assert len(sizes) > 1  # really several input sizes through one graph
    _assert_parity(reference, onnx)


def test_export_tool_cli(exported, tmp_path):
    """tools/export_model.py writes a model that ONNX Runtime loads with the expected outputs."""
    import importlib.util
    import os

    pytest.importorskip("onnxruntime")
    cfg, _, _ = exported
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(cfg.dump())
    spec = importlib.util.spec_from_file_location(
        "export_model", os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "export_model.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "m.pt"
    with contextlib.redirect_stdout(io.StringIO()):
        tool.main(["--format", "torchscript", "--config-file", str(config_file), "--output", str(out)])
    module = torch.jit.load(str(out))
    probs, boxes, coeffs, protos = module(torch.rand(1, 3, SIZE, SIZE) * 255)
    assert probs.shape[-1] == 7 and protos.shape == (1, 32, SIZE // 4, SIZE // 4)


# ------------------------------------------------------------------------------------------------
# YOLACT++: deformable convolutions
# ------------------------------------------------------------------------------------------------
PLUS = "COCO-InstanceSegmentation/yolact_plus_R_50_FPN_550.yaml"


def test_plus_onnx_export_below_opset_19_raises_clear_error(tmp_path):
    from detectron2.modeling import build_model

    from yolact_d2.export import export_onnx
    from yolact_d2.layers import DeformConvExportError

    model = build_model(yolact_cfg(PLUS, ["MODEL.YOLACT.NUM_CLASSES", 3, "INPUT.IMAGE_SIZE", 128])).eval()
    with pytest.raises(DeformConvExportError, match="opset_version>=19"):
        export_onnx(model, str(tmp_path / "plus.onnx"), 128, opset_version=18)
    assert not (tmp_path / "plus.onnx").exists()


def test_plus_onnx_export_runs_in_onnxruntime(tmp_path):
    """The dynamo exporter maps torchvision's deform_conv2d to ONNX DeformConv (opset 19), which
    ONNX Runtime runs: same outputs as PyTorch for a YOLACT++ R-50 with non-zero offsets."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from detectron2.modeling import build_model

    from yolact_d2.export import INPUT_NAME, YolactTensorCore, export_onnx
    from yolact_d2.layers import ModulatedDeformConv2d

    torch.manual_seed(0)
    model = build_model(
        yolact_cfg(PLUS, ["MODEL.YOLACT.NUM_CLASSES", 3, "INPUT.IMAGE_SIZE", 96, "MODEL.FPN.OUT_CHANNELS", 32])
    ).eval()
    dcns = [m for m in model.modules() if isinstance(m, ModulatedDeformConv2d)]
    for m in dcns:  # offsets of a few pixels, so that the deformation matters
        torch.nn.init.normal_(m.conv_offset_mask.weight, std=0.01)
    path = export_onnx(model, str(tmp_path / "plus.onnx"), 96)
    import onnx

    graph = onnx.load(path).graph
    assert sum(node.op_type == "DeformConv" for node in graph.node) == len(dcns) == 13
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 96, 96) * 255
    outputs = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        expected = YolactTensorCore(model)(x)
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-3, atol=1e-4)


def test_exported_model_files_that_cannot_be_used_are_one_line_errors(exported, tmp_path):
    """A missing file, bytes that are no model, and an ONNX graph of something else: ExportedModelError
    (a UserError: one line from the CLIs) naming the file, not a runtime's C++ trace."""
    import onnx

    from yolact_d2.export import ExportedModelError, YolactONNXPredictor, YolactTorchScriptPredictor
    from yolact_d2.runtime.reporting import format_user_error

    cfg, onnx_path, _ = exported
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    cases = [
        (YolactONNXPredictor, str(tmp_path / "missing.onnx"), "no such file"),
        (YolactONNXPredictor, str(junk), "ONNX Runtime cannot load it ([ONNXRuntimeError]"),
        (YolactTorchScriptPredictor, str(tmp_path / "missing.pt"), "no such file"),
        (YolactTorchScriptPredictor, str(junk), "torch.jit.load cannot load it ("),
    ]
    other = onnx.load(onnx_path)  # the same graph with its first output renamed: not our contract
    old = other.graph.output[0].name
    other.graph.output[0].name = "logits"
    for node in other.graph.node:
        node.output[:] = ["logits" if o == old else o for o in node.output]
    onnx.save(other, str(tmp_path / "other.onnx"))
    cases.append((YolactONNXPredictor, str(tmp_path / "other.onnx"), "not a yolact_d2 export: its outputs are "
                                                                     "['logits', 'boxes'"))
    for predictor, path, cause in cases:
        with pytest.raises(ExportedModelError) as info:
            predictor(cfg, path)
        line = format_user_error(info.value)
        assert line.startswith(f"error: exported model {path}: {cause}"), line
        assert "\n" not in line and line.endswith("(export it with yolact-export)")
    assert junk.read_bytes() == b"not a model"
