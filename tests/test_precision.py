"""MODEL.YOLACT.PRECISION_TEST (yolact_d2/precision.py, modeling/optimize.py: cast_network) and the
CPU capability probe (utils/cpu_features.py).

The bf16 network against float32 on the small trained model of test_quantization.py, on held-out
images: every float32 detection scoring >= 0.5 has a bf16 counterpart of the same class with box IoU
>= 0.5, mask IoU >= 0.85 and a score within 0.1; of those scoring >= 0.3, >= 80 % are matched.
Measured (3 held-out images, AMD Zen 4 with AVX512-BF16): 3 detections >= 0.5, mask IoU 0.995-0.999, score
differences 0.002-0.006.
"""
import pytest
import torch
from test_quantization import _bgr, _samples, train_two_shape_model

from conftest import captured, tiny_cfg, yolact_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _features(**flags):
    from yolact_d2.utils.cpu_features import CpuFeatures

    return CpuFeatures(source="test", **flags)


@pytest.mark.parametrize("flags, int8_file, expected", [
    ({}, False, "fp32"),
    ({}, True, "fp32"),  # int8 without VNNI is no faster than float32
    ({"vnni": True}, False, "fp32"),  # VNNI but no int8 file
    ({"vnni": True}, True, "int8"),
    ({"avx512_bf16": True}, False, "bf16"),
    ({"avx512_bf16": True, "vnni": True}, False, "bf16"),
    ({"avx512_bf16": True, "vnni": True}, True, "int8"),  # Zen 4: int8 3.3x float32
    ({"amx_bf16": True, "avx512_bf16": True, "vnni": True}, True, "bf16"),  # AMX: bf16 beats int8
    ({"amx_bf16": True}, False, "bf16"),
])
def test_auto_chooses_as_documented(flags, int8_file, expected):
    from yolact_d2.precision import choose_precision

    choice = choose_precision("auto", "cpu", int8_available=int8_file, features=_features(**flags))
    assert choice.precision == expected and choice.reason.startswith("auto")


def test_explicit_precisions_and_other_devices():
    from yolact_d2.precision import choose_precision
    from yolact_d2.utils.errors import ConfigError

    none = _features()
    assert choose_precision("fp32", "cpu", True, _features(amx_bf16=True)).precision == "fp32"
    slow = choose_precision("BF16", "cpu", features=none)
    assert slow.precision == "bf16" and "slower than fp32" in slow.reason
    assert "slower" not in choose_precision("bf16", "cpu", features=_features(avx512_bf16=True)).reason
    # no CPU probe on a GPU: bf16 when asked, auto stays float32 (not measured there)
    assert choose_precision("bf16", "cuda:0").precision == "bf16"
    assert choose_precision("auto", "cuda", int8_available=True).precision == "fp32"
    with pytest.raises(ConfigError, match="MODEL.YOLACT.PRECISION_TEST: unknown precision 'fp16'"):
        choose_precision("fp16", "cpu", features=none)


def test_predictor_auto_uses_the_probe(monkeypatch):
    from yolact_d2 import YolactPredictor
    from yolact_d2.utils import cpu_features

    cfg = tiny_cfg(num_classes=2, image_size=128, opts=["MODEL.YOLACT.PRECISION_TEST", "auto"])
    monkeypatch.setattr(cpu_features, "cpu_features", lambda: _features(avx512_bf16=True))
    with captured("yolact_d2.precision") as records:
        predictor = YolactPredictor(cfg)
    assert predictor.precision == "bf16"
    assert [r.getMessage() for r in records] == [
        "MODEL.YOLACT.PRECISION_TEST auto: running the network in bf16 (auto: this CPU has AVX512-BF16 (AVX512-BF16))"]
    for part in ("backbone", "head", "protonet"):
        assert {p.dtype for p in getattr(predictor.model, part).parameters()} == {torch.bfloat16}
    # channels-last kept through the cast
    conv = predictor.model.backbone.bottom_up.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)

    monkeypatch.setattr(cpu_features, "cpu_features", lambda: _features(vnni=True))
    predictor = YolactPredictor(cfg)
    assert predictor.precision == "fp32"
    assert {p.dtype for p in predictor.model.parameters()} == {torch.float32}
    # asked for bf16 on a CPU without it: runs, with one warning line saying it will be slow
    cfg.MODEL.YOLACT.PRECISION_TEST = "bf16"
    with captured("yolact_d2.precision") as records:
        assert YolactPredictor(cfg).precision == "bf16"
    assert len(records) == 1 and records[0].levelname == "WARNING" and "slower than fp32" in records[0].getMessage()
    # the predictor argument wins over the config
    assert YolactPredictor(cfg, precision="fp32").precision == "fp32"


def test_yolact_plus_refuses_bf16():
    from yolact_d2 import YolactPredictor
    from yolact_d2.utils.errors import ConfigError

    cfg = yolact_cfg("COCO-InstanceSegmentation/yolact_plus_R_50_FPN_550.yaml", [
        "MODEL.YOLACT.NUM_CLASSES", 2, "INPUT.IMAGE_SIZE", 128, "MODEL.FPN.OUT_CHANNELS", 64,
        "MODEL.YOLACT.PRECISION_TEST", "bf16"])
    with pytest.raises(ConfigError, match="MODEL.YOLACT.PRECISION_TEST: bf16: .*deformable"):
        YolactPredictor(cfg)


def test_cpuinfo_flags_fallback(tmp_path):
    from yolact_d2.utils.cpu_features import _from_flags, _proc_cpuinfo_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx_vnni\nbugs\t\t: none\n")
    flags = _proc_cpuinfo_flags(str(info))
    assert flags == {"fpu", "avx2", "avx512f", "avx512_bf16", "avx_vnni"}
    f = _from_flags(flags, "/proc/cpuinfo")
    assert (f.amx_bf16, f.avx512_bf16, f.vnni, f.native_bf16) == (False, True, True, True)
    assert _proc_cpuinfo_flags(str(tmp_path / "missing")) == frozenset()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_two_shape_model(tmp_path_factory.mktemp("bf16"))


@pytest.fixture(scope="module")
def trained_cfg(trained):
    return trained[0]


def test_evaluate_tool_builds_one_model_per_precision(trained):
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("evaluate_tool", os.path.join(root, "tools", "evaluate.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    from detectron2.data import DatasetCatalog

    cfg, config_file, data = trained
    if "bf16_eval_probe" not in DatasetCatalog.list():  # the tool checks --dataset is registered and non-empty
        DatasetCatalog.register("bf16_eval_probe", lambda: [{"file_name": "not read"}])
    args = tool.parse_args(["--config-file", str(config_file), "--weights", cfg.MODEL.WEIGHTS,
                            "--precision", "fp32,bf16", "--dataset", "bf16_eval_probe", "MODEL.DEVICE", "cpu"])
    _, _, models = tool.build(args)
    assert [label for label, _ in models] == ["torch", "torch bf16"]
    inputs = {"image": data[0]["image"], "height": 128, "width": 128}
    fp32, bf16 = (run(inputs)["instances"] for _, run in models)
    assert len(fp32) and len(bf16) and bf16.scores.dtype == torch.float32


def test_bf16_detections_agree_with_float32(trained_cfg):
    from yolact_d2 import YolactPredictor
    from yolact_d2.quantization import detection_agreement

    fp32 = YolactPredictor(trained_cfg, precision="fp32")
    bf16 = YolactPredictor(trained_cfg, precision="bf16")
    confident, loose = 0, {"detections": 0, "matched": 0}
    for sample in _samples(2, 3):  # held out
        a, b = fp32(_bgr(sample))["instances"], bf16(_bgr(sample))["instances"]
        # outputs are float32 whatever the network's precision
        assert b.scores.dtype == b.pred_boxes.tensor.dtype == torch.float32 and b.pred_masks.dtype == torch.bool
        agree = detection_agreement(a, b, min_score=0.5)
        print("float32 detections >= 0.5:", agree["detections"], "mask IoU:", [round(x, 3) for x in agree["mask_iou"]],
              "score diff:", [round(x, 3) for x in agree["score_diff"]])
        assert agree["matched"] == agree["detections"]
        assert min(agree["mask_iou"], default=1.0) >= 0.85
        assert max(agree["score_diff"], default=0.0) <= 0.1
        confident += agree["detections"]
        for key, value in detection_agreement(a, b, min_score=0.3).items():
            if key in loose:
                loose[key] += value
    assert confident >= 3
    assert loose["matched"] >= 0.8 * loose["detections"], loose


def test_cpu_amp_training_step_runs_the_forward_in_bf16():
    # SOLVER.AMP.ENABLED on the CPU: the forward (and the losses) under bf16 autocast, no grad scaler;
    # weights and gradients stay float32; the float32 step and CUDA's AMPTrainer are chosen otherwise
    from detectron2.modeling import build_model

    from yolact_d2.engine.cpu_amp import FiniteCpuBf16Trainer, training_step_class
    from yolact_d2.runtime.finite_loss import FiniteAMPTrainer, FiniteSimpleTrainer

    cfg = tiny_cfg(num_classes=2, image_size=128)
    assert training_step_class(cfg) is FiniteSimpleTrainer
    cfg.SOLVER.AMP.ENABLED = True
    assert training_step_class(cfg) is FiniteCpuBf16Trainer
    cfg.MODEL.DEVICE = "cuda"
    assert training_step_class(cfg) is FiniteAMPTrainer
    cfg.MODEL.DEVICE = "cpu"

    model = build_model(cfg).train()
    data = _samples(0, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    step = FiniteCpuBf16Trainer(model, iter([data] * 3), opt)
    assert not hasattr(step, "grad_scaler")
    seen = []
    model.backbone.register_forward_hook(lambda m, i, out: seen.append(next(iter(out.values())).dtype))
    before = model.head.cls_score.weight.detach().clone()
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        step.iter = 0
        step.run_step()
    assert seen == [torch.bfloat16]  # convolutions ran in bf16
    weight = model.head.cls_score.weight
    assert weight.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert not torch.equal(before, model.head.cls_score.weight)  # the step updated the weights
    assert not torch.is_autocast_enabled("cpu")  # left after the forward
    model(data)  # outside the step: float32
    assert seen[-1] == torch.float32
