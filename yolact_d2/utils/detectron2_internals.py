"""Every use of the private parts of Detectron2, fvcore and yacs in yolact_d2, in one module.

Detectron2 leaves some extension points to subclasses only under private names (how a checkpointer
reads a file, where a trainer's step hands over its losses, where the COCO evaluator writes its
files) and others not at all (the DDP wrapper and the step object that ``DefaultTrainer.__init__``
builds). Each such use is here, behind a public name, with a comment naming the version it was
written against; tests/test_detectron2_internals.py fails when one of them changes, so that an
upgrade of Detectron2 shows where to look. The rest of yolact_d2 uses Detectron2's public API only.

Versions: detectron2 0.7.2 (the build of detectron2's main branch that tools/setup_env.sh installs,
pip ``sal-detectron2``), fvcore 0.1.5.post20221221, yacs 0.1.8.

This module is a leaf (it imports no other module of yolact_d2) so that every layer may use it:
the core's evaluator as well as the run-time layer's checkpointer and the trainer.
"""
import contextlib
import re
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional
from urllib.parse import urlparse

import detectron2.engine.defaults as d2_defaults
import detectron2.evaluation.coco_evaluation as d2_coco_evaluation
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import compat as d2_config_compat
from detectron2.data import detection_utils as d2_detection_utils
from detectron2.utils import comm as d2_comm
from detectron2.utils import visualizer as d2_visualizer

__all__ = [
    "default_trainer_parts", "last_eval_results", "STEP_STATE_KEY", "LossesBeforeOptimizerStep",
    "CheckpointerExtensionPoints", "is_missing_checkpoint_assertion", "checkpoint_from_pickle",
    "checkpoint_from_pycls", "coco_ground_truth_for_init", "collected_predictions", "cocoeval_for_evaluate",
    "results_folder", "results_written_to", "YacsTypeMismatch", "yacs_type_mismatch", "yacs_unknown_key",
    "yacs_invalid_value", "config_file_version", "merge_config_of_version", "global_gloo_group",
    "create_text_labels", "apply_exif_orientation", "evaluate_predictions_on_coco",
]


# ---------------------------------------------------------------------------------------------- trainer
@contextlib.contextmanager
def default_trainer_parts(*, create_ddp_model: Callable, build_step: Callable) -> Iterator[None]:
    """Inside the block, ``DefaultTrainer.__init__`` wraps the model with ``create_ddp_model(model,
    **kwargs)`` and builds the object that runs each training step with ``build_step(model,
    data_loader, optimizer)``, instead of Detectron2's ``create_ddp_model`` (which passes CUDA
    ``device_ids`` to a CPU model) and ``SimpleTrainer`` / ``AMPTrainer``."""
    # detectron2 0.7.2: DefaultTrainer.__init__ calls the globals of detectron2.engine.defaults
    # create_ddp_model(model, broadcast_buffers=False) and (AMPTrainer if cfg.SOLVER.AMP.ENABLED else
    # SimpleTrainer)(model, data_loader, optimizer); neither is a method a subclass could override.
    replacements = {"create_ddp_model": create_ddp_model, "SimpleTrainer": build_step, "AMPTrainer": build_step}
    saved = {name: getattr(d2_defaults, name) for name in replacements}
    for name, value in replacements.items():
        setattr(d2_defaults, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(d2_defaults, name, value)


def last_eval_results(trainer) -> Optional[Dict[str, Any]]:
    """The results of a ``DefaultTrainer``'s last evaluation during training (its EvalHook), or None."""
    # detectron2 0.7.2: the EvalHook of DefaultTrainer.build_hooks stores them in trainer._last_eval_results;
    # DefaultTrainer.train returns them only when TEST.EXPECTED_RESULTS is set.
    return getattr(trainer, "_last_eval_results", None)


# detectron2 0.7.2: DefaultTrainer.state_dict() keeps the state of its step object (SimpleTrainer: the
# optimizer's) under this key; YolactLazyTrainer writes its checkpoints the same way.
STEP_STATE_KEY = "_trainer"


class LossesBeforeOptimizerStep:
    """Mixin, before ``SimpleTrainer`` / ``AMPTrainer`` in the bases: every step's loss dict goes to
    :meth:`handle_losses` after the backward pass and before the optimizer step."""

    # detectron2 0.7.2: SimpleTrainer.run_step and AMPTrainer.run_step call self._write_metrics(loss_dict,
    # data_time) after backward() and after_backward(), before the optimizer (or grad scaler) step; that
    # private method is the only place that sees the loss dict there (with async_write_metrics, False in
    # DefaultTrainer, it would run in a thread instead).
    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        self.handle_losses(loss_dict, data_time, prefix=prefix, iter=iter)

    def handle_losses(self, loss_dict, data_time, prefix="", iter=None) -> None:
        """Detectron2's handling: the losses into the event storage (main process: FloatingPointError
        when their sum is not finite). Subclasses override it and call it for the losses to write."""
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


# ---------------------------------------------------------------------------------------------- checkpoints
class CheckpointerExtensionPoints(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose private extension points a subclass overrides under public
    names: :meth:`read_file` (the data of a local checkpoint file), :meth:`torch_load` (a file in
    PyTorch's format), :meth:`load_model_state` (the checkpoint's model part into the model)."""

    # fvcore 0.1.5.post20221221: Checkpointer.load(path) reads the file with self._load_file(local path)
    # ("can be overwritten by subclasses to support different formats"), then calls
    # self._load_model(checkpoint), which returns the incompatible keys.
    def _load_file(self, filename):
        return self.read_file(filename)

    def read_file(self, filename: str) -> Dict[str, Any]:
        """Detectron2's reading: .pkl (Detectron / Caffe2 model zoos), .pyth (pycls), else :meth:`torch_load`."""
        return super()._load_file(filename)

    # detectron2 0.7.2: DetectionCheckpointer._load_file reads files of PyTorch's format with self._torch_load(f).
    def _torch_load(self, f):
        return self.torch_load(f)

    def torch_load(self, filename: str) -> Dict[str, Any]:
        return super()._torch_load(filename)

    def _load_model(self, checkpoint):
        return self.load_model_state(checkpoint)

    def load_model_state(self, checkpoint: Dict[str, Any]):
        """Detectron2's loading of ``checkpoint["model"]``; returns fvcore's incompatible keys
        (``missing_keys``, ``unexpected_keys``, ``incorrect_shapes``)."""
        return super()._load_model(checkpoint)

    # detectron2 0.7.2: DetectionCheckpointer.load(path) removes a query (?matching_heuristics=True) from
    # path before PathManager.get_local_path, and keeps the parsed URL in self._parsed_url_during_load for
    # _load_file, which asserts that it is set; load() asserts that it is None when it starts and resets it
    # only after a load that succeeded.
    def local_file(self, path: str) -> str:
        """The local file that ``load(path)`` reads (a URL is downloaded, a query removed)."""
        return self.path_manager.get_local_path(urlparse(path)._replace(query="").geturl())

    def read_file_of(self, path: str, local: str) -> Dict[str, Any]:
        """The data ``load(path)`` would read from ``local`` (``path``'s query applied), outside a load."""
        self._parsed_url_during_load = urlparse(path)
        try:
            return self._load_file(local)
        finally:
            self._parsed_url_during_load = None

    def forget_failed_load(self) -> None:
        """After a load that raised: the next load may start (Detectron2 would assert)."""
        self._parsed_url_during_load = None


def is_missing_checkpoint_assertion(error: AssertionError, path: str) -> bool:
    """The AssertionError of ``Checkpointer.load(path)`` for a file that does not exist."""
    # fvcore 0.1.5.post20221221: Checkpointer.load asserts os.path.isfile(path), "Checkpoint {} not found!".
    return str(error) == f"Checkpoint {path} not found!"


# detectron2 0.7.2: DetectionCheckpointer._load_file reads .pkl files with pickle.load and .pyth files
# with torch.load, then converts them as below; yolact_d2 reads the files safely (runtime/safe_load.py)
# and converts the data the same way.
def checkpoint_from_pickle(data: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint Detectron2 makes of the data of a .pkl file: Detectron2's model zoo format as it
    is, else a Caffe2 / Detectron1 file (its ``blobs``, without the ``_momentum`` entries)."""
    if "model" in data and "__author__" in data:
        return data
    data = data.get("blobs", data)  # detection models have "blobs", ImageNet models do not
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


def checkpoint_from_pycls(data: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint Detectron2 makes of the data of a pycls .pyth file (which has ``model_state``)."""
    state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
    return {"model": state, "__author__": "pycls", "matching_heuristics": True}


# ---------------------------------------------------------------------------------------------- evaluation
@contextlib.contextmanager
def coco_ground_truth_for_init(coco_gt) -> Iterator[None]:
    """Inside the block, a ``COCOEvaluator`` that is built scores against the pycocotools ``COCO``
    object ``coco_gt`` instead of reading (or converting) its dataset's json file."""
    # detectron2 0.7.2: COCOEvaluator.__init__ converts a dataset without metadata.json_file with the
    # global convert_to_coco_json of detectron2.evaluation.coco_evaluation and reads the json with its
    # global COCO(json_file) into self._coco_api.
    saved = d2_coco_evaluation.COCO, d2_coco_evaluation.convert_to_coco_json
    d2_coco_evaluation.COCO = lambda *_args, **_kwargs: coco_gt
    d2_coco_evaluation.convert_to_coco_json = lambda *_args, **_kwargs: None
    try:
        yield
    finally:
        d2_coco_evaluation.COCO, d2_coco_evaluation.convert_to_coco_json = saved


def collected_predictions(evaluator) -> list:
    """The list a ``COCOEvaluator`` collects its per-image predictions in (``evaluate`` gathers it)."""
    # detectron2 0.7.2: COCOEvaluator.reset() sets self._predictions = [], process() appends
    # {"image_id", "instances": COCO json results, "proposals"} to it.
    return evaluator._predictions


@contextlib.contextmanager
def cocoeval_for_evaluate(evaluator, cocoeval: Optional[Callable] = None,
                          wrap: Callable[[Callable], Callable] = lambda cls: cls) -> Iterator[None]:
    """Inside the block, ``evaluator.evaluate()`` runs COCO's evaluation of each task with
    ``wrap(cls)(coco_gt, coco_dt, iou_type)``: ``cls`` is ``cocoeval`` when given (then Detectron2 logs it
    as its fast, "unofficial" implementation), else the class Detectron2 picks."""
    # detectron2 0.7.2: COCOEvaluator._eval_predictions evaluates with cocoeval_fn=(COCOeval_opt if
    # self._use_fast_impl else COCOeval), globals of detectron2.evaluation.coco_evaluation, called as
    # cocoeval_fn(coco_gt, coco_dt, iou_type) after coco_dt = coco_gt.loadRes(results).
    fast = cocoeval is not None or bool(evaluator._use_fast_impl)
    name = "COCOeval_opt" if fast else "COCOeval"
    saved, saved_fast = getattr(d2_coco_evaluation, name), evaluator._use_fast_impl
    setattr(d2_coco_evaluation, name, wrap(cocoeval if cocoeval is not None else saved))
    evaluator._use_fast_impl = fast
    try:
        yield
    finally:
        setattr(d2_coco_evaluation, name, saved)
        evaluator._use_fast_impl = saved_fast


def evaluate_predictions_on_coco(coco_gt, coco_results, iou_type: str, cocoeval_fn: Callable):
    """What ``COCOEvaluator`` runs for one task: ``cocoeval_fn(coco_gt, coco_gt.loadRes(results), iou_type)``
    evaluated, accumulated and summarised (the mask task without boxes); returns the COCOeval object.
    For tools/benchmark_coco_eval.py, which times the backends on exactly that."""
    # detectron2 0.7.2: detectron2.evaluation.coco_evaluation._evaluate_predictions_on_coco(coco_gt,
    # coco_results, iou_type, kpt_oks_sigmas=None, cocoeval_fn=COCOeval_opt, img_ids=None, max_dets_per_image=None).
    return d2_coco_evaluation._evaluate_predictions_on_coco(coco_gt, coco_results, iou_type, cocoeval_fn=cocoeval_fn)


def results_folder(evaluator) -> Optional[str]:
    """The folder a ``COCOEvaluator`` writes its result files to (its ``output_dir``), or None."""
    # detectron2 0.7.2: COCOEvaluator keeps output_dir in self._output_dir; evaluate() writes
    # instances_predictions.pth and coco_instances_results.json there (PathManager.open, not atomic).
    return getattr(evaluator, "_output_dir", None)


@contextlib.contextmanager
def results_written_to(evaluator, folder: str) -> Iterator[None]:
    """Inside the block, ``evaluator.evaluate()`` writes its result files into ``folder``."""
    saved = evaluator._output_dir
    evaluator._output_dir = folder
    try:
        yield
    finally:
        evaluator._output_dir = saved


# ---------------------------------------------------------------------------------------------- configs
class YacsTypeMismatch(NamedTuple):
    key: str
    expected_type: str  # the type the key holds (its class name: int, str, CfgNode, ...)
    given_type: str
    current: str  # the key's value, as yacs prints it
    given: str


# yacs 0.1.8: _check_and_coerce_cfg_value_type raises ValueError("Type mismatch ({} vs. {}) with values
# ({} vs. {}) for config key: {}") with the types as "<class 'int'>" and the values printed with str().
_TYPE_MISMATCH = re.compile(
    r"Type mismatch \(<class '([\w.]+)'> vs\. <class '([\w.]+)'>\) with values \((.*) vs\. (.*)\) "
    r"for config key: (\S+)$",
    re.DOTALL,  # a group of keys (CfgNode) prints over several lines
)


def yacs_type_mismatch(error: BaseException) -> Optional[YacsTypeMismatch]:
    """What a yacs merge's ValueError says of a value of another type than the key's, or None."""
    match = _TYPE_MISMATCH.match(str(error))
    if not match:
        return None
    want, got, current, given, key = match.groups()
    return YacsTypeMismatch(key, want.rsplit(".", 1)[-1], got.rsplit(".", 1)[-1], current, given)


def yacs_unknown_key(error: BaseException) -> Optional[str]:
    """The key a yacs merge refused as unknown, or None for another error."""
    # yacs 0.1.8: merge_from_list asserts "Non-existent key: {full key}" (AssertionError); merging a file
    # (_merge_a_into_b) raises KeyError("Non-existent config key: {full key}").
    message = error.args[0] if error.args else str(error)
    if not isinstance(message, str) or not message.startswith(("Non-existent key:", "Non-existent config key:")):
        return None
    return message.split(":", 1)[1].strip()


def yacs_invalid_value(error: BaseException) -> Optional[str]:
    """yacs' message for a value of a type a config cannot hold (a date, a set, bytes), or None."""
    # yacs 0.1.8: CfgNode(init_dict) asserts "Key {} with value {} is not a valid type; valid types: {}".
    message = error.args[0] if error.args and isinstance(error.args[0], str) else ""
    return message if "is not a valid type" in message else None


# detectron2 0.7.2: CfgNode.merge_from_file(filename) reads the file, then does what the two functions
# below do (guess_version for a file without VERSION; a file of an older VERSION is merged into the
# defaults of that version and upgraded). yolact_d2 reads the file itself (runtime/config_yaml.py: plain
# YAML only) and then merges it the same way.
def config_file_version(loaded, filename: str) -> int:
    """The Detectron2 config VERSION of ``loaded`` (a CfgNode of the keys of ``filename``)."""
    version = loaded.get("VERSION", None)
    return d2_config_compat.guess_version(loaded, filename) if version is None else version


def merge_config_of_version(cfg, loaded, version: int) -> None:
    """Merge ``loaded``, keys of config VERSION ``version`` (at most ``cfg.VERSION``), into ``cfg``."""
    if version == cfg.VERSION:
        cfg.merge_from_other_cfg(loaded)
        return
    old = d2_config_compat.downgrade_config(cfg, to_version=version)
    old.merge_from_other_cfg(loaded)
    new = d2_config_compat.upgrade_config(old)
    cfg.clear()
    cfg.update(new)


# ---------------------------------------------------------------------------------------------- others
def global_gloo_group():
    """A gloo process group of all ranks, for CPU collectives whatever the training backend."""
    # detectron2 0.7.2: comm._get_global_gloo_group() (a new gloo group with NCCL, else the world group).
    return d2_comm._get_global_gloo_group()


def create_text_labels(classes, scores, class_names):
    """The "class score%" labels of Detectron2's ``Visualizer.draw_instance_predictions``."""
    # detectron2 0.7.2: detectron2.utils.visualizer._create_text_labels(classes, scores, class_names, is_crowd=None).
    return d2_visualizer._create_text_labels(classes, scores, class_names)


def apply_exif_orientation(image):
    """A Pillow image turned as its EXIF orientation says, as Detectron2's ``read_image`` does."""
    # detectron2 0.7.2: detectron2.data.detection_utils._apply_exif_orientation(image).
    return d2_detection_utils._apply_exif_orientation(image)
