"""The private parts of Detectron2, fvcore and yacs that yolact_d2 relies on, all reached through
yolact_d2/utils/detectron2_internals.py: each test here checks that one of them still behaves as that
module's comments say (written against detectron2 0.7.2, fvcore 0.1.5.post20221221, yacs 0.1.8), so
that an upgrade which changes one fails here, by name, rather than somewhere in a training run."""
import contextlib
import datetime
import inspect
import io
import itertools
import os
import pickle

import numpy as np
import pytest
import torch
from fvcore.common.checkpoint import Checkpointer
from PIL import Image
from pycocotools.coco import COCO
from torch import nn

import detectron2.engine.defaults as d2_defaults
import detectron2.evaluation.coco_evaluation as d2_coco_evaluation
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from yolact_d2.utils.detectron2_internals import (
    STEP_STATE_KEY,
    CheckpointerExtensionPoints,
    LossesBeforeOptimizerStep,
    apply_exif_orientation,
    checkpoint_from_pickle,
    checkpoint_from_pycls,
    coco_ground_truth_for_init,
    cocoeval_for_evaluate,
    collected_predictions,
    config_file_version,
    create_text_labels,
    default_trainer_parts,
    evaluate_predictions_on_coco,
    global_gloo_group,
    is_missing_checkpoint_assertion,
    last_eval_results,
    merge_config_of_version,
    results_folder,
    results_written_to,
    yacs_invalid_value,
    yacs_type_mismatch,
    yacs_unknown_key,
)


def _parameters(function):
    return list(inspect.signature(function).parameters)


# ---------------------------------------------------------------------------------------------- trainer
class _Weight(nn.Module):
    """A one-parameter model whose "loss" is weight * x for a batch x."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return {"loss": self.weight * batch}


class _TinyTrainer(DefaultTrainer):
    """DefaultTrainer through its extension points, on :class:`_Weight` and a batch of 1.0 forever."""

    @classmethod
    def build_model(cls, cfg):
        return _Weight()

    @classmethod
    def build_optimizer(cls, cfg, model):
        return torch.optim.SGD(model.parameters(), lr=0.5)

    @classmethod
    def build_train_loader(cls, cfg):
        return itertools.repeat(torch.tensor(1.0))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        return {"bbox": {"AP": 12.5}}


def _tiny_cfg(tmp_path, amp=False):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 2, (), 0
    cfg.SOLVER.AMP.ENABLED = amp
    return cfg


@pytest.mark.parametrize("amp", [False, True])
def test_default_trainer_init_builds_the_ddp_wrapper_and_the_step_from_module_globals(tmp_path, amp):
    assert {"create_ddp_model", "SimpleTrainer", "AMPTrainer"} <= set(DefaultTrainer.__init__.__code__.co_names)
    before = (d2_defaults.create_ddp_model, d2_defaults.SimpleTrainer, d2_defaults.AMPTrainer)
    assert before[1:] == (SimpleTrainer, AMPTrainer)
    wrapped, built = [], []

    def wrap(model, **kwargs):
        wrapped.append((model, kwargs))
        return model

    def build_step(model, data_loader, optimizer):
        built.append(SimpleTrainer(model, data_loader, optimizer))
        return built[-1]

    with default_trainer_parts(create_ddp_model=wrap, build_step=build_step):
        trainer = _TinyTrainer(_tiny_cfg(tmp_path, amp))
    assert (d2_defaults.create_ddp_model, d2_defaults.SimpleTrainer, d2_defaults.AMPTrainer) == before
    assert len(wrapped) == 1 and wrapped[0][1] == {"broadcast_buffers": False}  # the model DefaultTrainer built
    assert isinstance(wrapped[0][0], _Weight) and trainer.model is wrapped[0][0]
    assert len(built) == 1 and trainer._trainer is built[0]  # AMP or not: our step, no AMPTrainer (no GradScaler)
    assert trainer.optimizer is built[0].optimizer and trainer.data_loader is built[0].data_loader
    assert type(trainer.checkpointer) is DetectionCheckpointer  # made by __init__, before build_hooks


def test_default_trainer_keeps_its_evaluation_and_its_step_state_where_we_read_them(tmp_path):
    trainer = _TinyTrainer(_tiny_cfg(tmp_path))
    assert last_eval_results(trainer) is None
    trainer.train()  # TEST.EVAL_PERIOD 0: EvalHook evaluates after the last iteration
    assert last_eval_results(trainer) == {"bbox": {"AP": 12.5}}
    state = trainer.state_dict()
    assert state[STEP_STATE_KEY].keys() == trainer._trainer.state_dict().keys() and "optimizer" in state[STEP_STATE_KEY]
    saved = torch.load(os.path.join(tmp_path, "model_final.pth"), weights_only=False)
    assert saved["trainer"][STEP_STATE_KEY]["optimizer"]["param_groups"][0]["lr"] == 0.5
    assert float(saved["model"]["weight"]) == pytest.approx(1.0 - 2 * 0.5)  # two steps of lr 0.5, gradient 1


def test_simple_trainer_hands_the_losses_over_after_backward_and_before_the_step():
    assert _parameters(SimpleTrainer._write_metrics) == ["self", "loss_dict", "data_time", "prefix", "iter"]
    for cls in (SimpleTrainer, AMPTrainer):
        names = cls.run_step.__code__.co_names
        assert "_write_metrics" in names and "after_backward" in names, cls
    seen = []

    class Step(LossesBeforeOptimizerStep, SimpleTrainer):
        def handle_losses(self, loss_dict, data_time, prefix="", iter=None):
            seen.append((float(loss_dict["loss"].detach()), float(self.model.weight.grad)))
            if torch.isfinite(loss_dict["loss"]):
                return super().handle_losses(loss_dict, data_time, prefix=prefix, iter=iter)
            self.optimizer.zero_grad(set_to_none=True)  # the step then leaves the weight alone

    model = _Weight()
    batches = iter([torch.tensor(2.0), torch.tensor(float("nan"))])
    step = Step(model, batches, torch.optim.SGD(model.parameters(), lr=0.25))
    with EventStorage() as storage:
        step.iter = storage.iter = 0
        step.run_step()
        assert storage.latest()["total_loss"][0] == 2.0  # Detectron2's metrics, written by handle_losses
        step.iter = storage.iter = 1
        step.run_step()  # a NaN loss: Detectron2's _write_metrics would raise FloatingPointError
    assert seen[0] == (2.0, 2.0) and np.isnan(seen[1][0])  # after backward: the gradient is there
    assert float(model.weight.detach()) == pytest.approx(1.0 - 0.25 * 2.0)  # one step only, the NaN one skipped


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_weights(path, model):
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_checkpointer_extension_points_are_called_by_load(tmp_path):
    assert _parameters(Checkpointer._load_file) == ["self", "f"]
    assert _parameters(Checkpointer._load_model) == ["self", "checkpoint"]
    assert _parameters(DetectionCheckpointer._load_file) == ["self", "filename"]
    assert _parameters(DetectionCheckpointer._torch_load) == ["self", "f"]
    calls = []

    class Recording(CheckpointerExtensionPoints):
        def read_file(self, filename):
            calls.append("read_file")
            return super().read_file(filename)

        def torch_load(self, filename):
            calls.append("torch_load")
            return super().torch_load(filename)

        def load_model_state(self, checkpoint):
            calls.append("load_model_state")
            return super().load_model_state(checkpoint)

    source = nn.Linear(2, 2)
    path = _save_weights(tmp_path / "w.pth", source)
    target = nn.Linear(2, 2)
    Recording(target).load(path)
    assert calls == ["read_file", "torch_load", "load_model_state"]
    assert torch.equal(target.weight, source.weight)

    checkpointer = Recording(nn.Linear(2, 2))
    with_query = path + "?matching_heuristics=True"
    assert checkpointer.local_file(with_query) == path
    assert checkpointer.read_file_of(with_query, path)["matching_heuristics"] is True
    assert "matching_heuristics" not in checkpointer.read_file_of(path, path)


def test_a_failed_load_blocks_the_next_until_forgotten(tmp_path):
    path = _save_weights(tmp_path / "w.pth", nn.Linear(2, 2))

    class FailsOnce(CheckpointerExtensionPoints):
        failed = False

        def read_file(self, filename):
            if not self.failed:
                self.failed = True
                raise OSError("disk gone")
            return super().read_file(filename)

    checkpointer = FailsOnce(nn.Linear(2, 2))
    with pytest.raises(OSError):
        checkpointer.load(path)
    with pytest.raises(AssertionError):  # Detectron2 reset its URL state only after a load that succeeded
        checkpointer.load(path)
    checkpointer.forget_failed_load()
    checkpointer.load(path)


def test_fvcore_missing_checkpoint_assertion(tmp_path):
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(AssertionError) as info:
        DetectionCheckpointer(nn.Linear(1, 1)).load(missing)
    assert is_missing_checkpoint_assertion(info.value, missing)
    assert not is_missing_checkpoint_assertion(AssertionError("something else"), missing)


@pytest.mark.parametrize("data", [
    {"blobs": {"conv1_w": np.ones((2, 2), np.float32), "conv1_w_momentum": np.zeros((2, 2), np.float32)}},
    {"res2_w": np.ones(3, np.float32), "fc_b_momentum": np.ones(1, np.float32)},  # ImageNet: no "blobs"
    {"model": {"a": np.ones(1, np.float32)}, "__author__": "Detectron2 model zoo", "matching_heuristics": True},
])
def test_pickle_checkpoints_are_converted_as_detectron2_does(tmp_path, data):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(data))
    theirs = DetectionCheckpointer(nn.Linear(1, 1))._load_file(str(path))
    ours = checkpoint_from_pickle(pickle.loads(path.read_bytes()))
    assert ours.keys() == theirs.keys() and ours["model"].keys() == theirs["model"].keys()
    assert {k: v for k, v in ours.items() if k != "model"} == {k: v for k, v in theirs.items() if k != "model"}
    for key, value in theirs["model"].items():
        np.testing.assert_array_equal(ours["model"][key], value)


def test_pycls_checkpoints_are_converted_as_detectron2_does(tmp_path):
    path = str(tmp_path / "weights.pyth")
    torch.save({"model_state": {"stem.w": torch.ones(2), "bn.num_batches_tracked": torch.tensor(3)}}, path)
    theirs = DetectionCheckpointer(nn.Linear(1, 1))._load_file(path)
    ours = checkpoint_from_pycls(torch.load(path))
    assert {k: v for k, v in ours.items() if k != "model"} == {k: v for k, v in theirs.items() if k != "model"}
    assert list(ours["model"]) == list(theirs["model"]) == ["stem.w"]


def test_fvcore_writes_checkpoints_through_the_path_manager(tmp_path):
    """Not a private name, but what the atomic checkpointer relies on (runtime/checkpointer.py)."""
    checkpointer = DetectionCheckpointer(nn.Linear(1, 1), str(tmp_path))
    opened = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def open(self, path, mode="r", **kwargs):
            opened.append((os.path.basename(path), mode))
            return self.inner.open(path, mode, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    checkpointer.path_manager = Recording(checkpointer.path_manager)
    checkpointer.save("model_0000001")
    assert opened == [("model_0000001.pth", "wb"), ("last_checkpoint", "w")]


# ---------------------------------------------------------------------------------------------- evaluation
@pytest.fixture
def one_box_dataset():
    name = "_internals_one_box"
    MetadataCatalog.get(name).set(
        json_file="/not/read.json", thing_classes=["a"], thing_dataset_id_to_contiguous_id={7: 0})
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "height": 10, "width": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0,
                         "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}],
        "categories": [{"id": 7, "name": "a"}],
    }
    coco.createIndex()
    return name, coco


def _one_prediction():
    instances = Instances((10, 10))
    instances.pred_boxes = Boxes(torch.tensor([[1.0, 1.0, 5.0, 5.0]]))
    instances.scores = torch.tensor([0.9])
    instances.pred_classes = torch.tensor([0])
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 1:5, 1:5] = True
    instances.pred_masks = masks
    return [{"image_id": 1, "height": 10, "width": 10}], [{"instances": instances}]


def test_coco_evaluator_reads_its_ground_truth_through_module_globals(one_box_dataset, tmp_path):
    assert {"COCO", "convert_to_coco_json"} <= set(COCOEvaluator.__init__.__code__.co_names)
    name, coco = one_box_dataset
    before = (d2_coco_evaluation.COCO, d2_coco_evaluation.convert_to_coco_json)
    with coco_ground_truth_for_init(coco):
        evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False)  # /not/read.json is not read
        MetadataCatalog.get("_internals_no_json").set(thing_classes=["a"])
        COCOEvaluator("_internals_no_json", tasks=("bbox",), distributed=False, output_dir=str(tmp_path))
    assert (d2_coco_evaluation.COCO, d2_coco_evaluation.convert_to_coco_json) == before
    assert evaluator._coco_api is coco
    assert os.listdir(tmp_path) == []  # nothing converted


def test_coco_evaluator_predictions_cocoeval_and_result_folder(one_box_dataset, tmp_path):
    name, coco = one_box_dataset
    with coco_ground_truth_for_init(coco):
        evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    assert collected_predictions(evaluator) == []
    evaluator.process(*_one_prediction())
    assert [p["image_id"] for p in collected_predictions(evaluator)] == [1]
    assert results_folder(evaluator) == str(tmp_path / "out")
    assert "COCOeval_opt" in COCOEvaluator._eval_predictions.__code__.co_names
    assert _parameters(d2_coco_evaluation._evaluate_predictions_on_coco)[:3] == ["coco_gt", "coco_results", "iou_type"]

    from pycocotools.cocoeval import COCOeval

    for backend in (None, COCOeval):
        evaluator.reset()  # evaluate() maps the category ids of the predictions in place
        evaluator.process(*_one_prediction())
        used = []

        def wrap(cls, used=used):
            def cocoeval(coco_gt, coco_dt, iou_type):
                used.append((cls, iou_type, coco_gt is coco, len(coco_dt.anns)))
                return cls(coco_gt, coco_dt, iou_type)
            return cocoeval

        before = (d2_coco_evaluation.COCOeval_opt, d2_coco_evaluation.COCOeval, evaluator._use_fast_impl)
        default = d2_coco_evaluation.COCOeval_opt if evaluator._use_fast_impl else d2_coco_evaluation.COCOeval
        staging = tmp_path / f"staging-{backend is None}"
        staging.mkdir()
        with cocoeval_for_evaluate(evaluator, backend, wrap=wrap), results_written_to(evaluator, str(staging)):
            results = evaluator.evaluate()
        assert (d2_coco_evaluation.COCOeval_opt, d2_coco_evaluation.COCOeval, evaluator._use_fast_impl) == before
        expected = default if backend is None else backend
        assert used == [(expected, "bbox", True, 1), (expected, "segm", True, 1)]
        assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(100.0)
        assert sorted(os.listdir(staging)) == ["coco_instances_results.json", "instances_predictions.pth"]
        assert results_folder(evaluator) == str(tmp_path / "out") and not (tmp_path / "out").exists()

    results = instances_to_coco_json(_one_prediction()[1][0]["instances"], 1)
    for result in results:
        result["category_id"] = 7  # the json's id
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate_predictions_on_coco(coco, results, "segm", COCOeval).stats[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- configs
def test_yacs_error_texts():
    cfg = get_cfg()
    with pytest.raises(AssertionError) as info:
        cfg.merge_from_list(["MODEL.NOPE", "1"])
    assert yacs_unknown_key(info.value) == "MODEL.NOPE"
    with pytest.raises(KeyError) as info:
        cfg.merge_from_other_cfg(CfgNode({"SOLVER": {"BASE_LRR": 0.1}}))
    assert yacs_unknown_key(info.value) == "SOLVER.BASE_LRR"
    assert yacs_unknown_key(KeyError("MODEL")) is None

    with pytest.raises(ValueError) as info:
        cfg.merge_from_list(["SOLVER.MAX_ITER", "abc"])
    assert yacs_type_mismatch(info.value) == ("SOLVER.MAX_ITER", "int", "str", "40000", "abc")
    with pytest.raises(ValueError) as info:
        cfg.merge_from_other_cfg(CfgNode({"SOLVER": 3}))  # a value where a group of keys is
    mismatch = yacs_type_mismatch(info.value)
    assert (mismatch.key, mismatch.expected_type, mismatch.given_type, mismatch.given) == (
        "SOLVER", "CfgNode", "int", "3")
    assert "BASE_LR" in mismatch.current  # the group, printed over several lines
    assert yacs_type_mismatch(ValueError("other")) is None

    with pytest.raises(AssertionError) as info:
        CfgNode({"DAY": datetime.date(2026, 12, 7)})
    message = yacs_invalid_value(info.value)
    assert message.startswith("Key DAY with value") and "is not a valid type" in message
    assert yacs_invalid_value(AssertionError("other")) is None


@pytest.mark.parametrize("text", [
    "VERSION: 1\nMODEL:\n  WEIGHT: old.pth\nSOLVER:\n  BASE_LR: 0.5\n",  # renamed keys, upgraded
    "MODEL:\n  WEIGHT: guessed.pth\n",  # no VERSION: guessed from the keys (v1)
    "VERSION: 2\nMODEL:\n  WEIGHTS: new.pth\n",
    "SOLVER:\n  MAX_ITER: 7\n",  # no VERSION, current keys
])
def test_config_files_merge_as_detectron2_merges_them(tmp_path, text):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(text)
    theirs = get_cfg()
    theirs.merge_from_file(str(path))
    ours = get_cfg()
    loaded = CfgNode(yaml.safe_load(text))
    merge_config_of_version(ours, loaded, config_file_version(loaded, str(path)))
    assert ours.dump() == theirs.dump()


# ---------------------------------------------------------------------------------------------- others
def test_small_helpers():
    assert _parameters(comm._get_global_gloo_group) == [] and callable(global_gloo_group)
    assert create_text_labels([0, 1], torch.tensor([0.9, 0.25]), ["cat", "dog"]) == ["cat 90%", "dog 25%"]

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (4, 2)).save(buffer, "JPEG", exif=exif.tobytes())
    buffer.seek(0)
    assert apply_exif_orientation(Image.open(buffer)).size == (2, 4)
