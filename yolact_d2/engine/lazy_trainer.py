"""``YolactLazyTrainer``: training from a LazyConfig (``configs/**/*.py``) with what ``YolactTrainer`` gives a
yaml config: the finite-loss check with hints, atomic checkpoints, interrupt checkpoints, the count of skipped
bad images, YOLACT's evaluator; and Detectron2's ``tools/lazyconfig_train_net.py`` keys: ``model``,
``optimizer`` (``params.model`` set to the model), ``dataloader.{train,test,evaluator}``, ``lr_multiplier``
and ``train.*`` (``output_dir``, ``init_checkpoint``, ``max_iter``, ``amp``, ``ddp``, ``checkpointer``,
``eval_period``, ``log_period``, ``device``)."""
import logging
import weakref

from omegaconf import OmegaConf

from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import TrainerBase, default_writers
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..modeling import Yolact
from ..runtime.checkpointer import AtomicDetectionCheckpointer
from ..runtime.finite_loss import FiniteAMPTrainer, FiniteSimpleTrainer
from ..runtime.interrupt import InterruptHook
from ..utils.detectron2_internals import STEP_STATE_KEY
from ..utils.errors import ConfigError
from .ddp import create_ddp_model
from .skipped_images import SkippedImages

__all__ = ["YolactLazyTrainer", "build_lazy_model", "lazy_test", "lazy_dataset_names"]

logger = logging.getLogger(__name__)


def build_lazy_model(cfg):
    """``instantiate(cfg.model)`` on ``cfg.train.device``; anything but a :class:`Yolact` is an error."""
    model = instantiate(cfg.model)
    if not isinstance(model, Yolact):
        raise ConfigError(f"model: builds {type(model).__name__}, not Yolact", fix="use a yolact_d2 LazyConfig")
    return model.to(cfg.train.device)


def lazy_dataset_names(node) -> list:
    """The dataset names of a LazyConfig's ``dataloader.train`` / ``dataloader.test`` (``dataset.names``)."""
    names = node.dataset.get("names", ()) if "dataset" in node else ()
    return [names] if isinstance(names, str) else list(names)


def check_lazy_num_classes(cfg, node, key: str) -> None:
    """``model.head.num_classes`` equal to the number of classes of the datasets of ``node`` (loaded, so
    that their metadata is complete), as ``check_num_classes`` does for ``MODEL.YOLACT.NUM_CLASSES``."""
    expected = int(cfg.model.head.num_classes)
    for name in lazy_dataset_names(node):
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != expected:
            raise ConfigError(
                f"{key}: dataset '{name}' has {len(classes)} classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but model.head.num_classes is {expected}",
                fix=f"set model.head.num_classes={len(classes)}",
            )


def lazy_test(cfg, model):
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator``, as Detectron2's
    lazyconfig_train_net.py does; the results as ``{task: metrics}``."""
    loader = instantiate(cfg.dataloader.test)  # first: it registers the dataset the evaluator reads
    check_lazy_num_classes(cfg, cfg.dataloader.test, "dataloader.test.dataset.names")
    results = inference_on_dataset(model, loader, instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


class YolactLazyTrainer(TrainerBase):
    """Detectron2's ``DefaultTrainer`` for a LazyConfig, with the reliability parts of ``YolactTrainer``
    (see the module docstring). ``resume_or_load`` reads ``train.init_checkpoint``."""

    def __init__(self, cfg):
        super().__init__()
        model = build_lazy_model(cfg)
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        skipping = OmegaConf.select(cfg, "dataloader.train.mapper.skip_bad_images", default=False)
        self.skipped_images = SkippedImages(skipping=bool(skipping))  # DATALOADER.SKIP_BAD_IMAGES of a LazyConfig
        data_loader = self.skipped_images.batches(instantiate(cfg.dataloader.train))
        check_lazy_num_classes(cfg, cfg.dataloader.train, "dataloader.train.dataset.names")
        ddp = dict(cfg.train.get("ddp", {}))
        fp16_compression = ddp.pop("fp16_compression", False)
        model = create_ddp_model(model, **ddp)
        if fp16_compression and comm.get_world_size() > 1:
            from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

            model.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
        run_step = FiniteAMPTrainer if cfg.train.amp.enabled else FiniteSimpleTrainer
        self._trainer = run_step(model, data_loader, optimizer)
        self._trainer.hint_source = weakref.ref(self)
        self.checkpointer = AtomicDetectionCheckpointer(model, cfg.train.output_dir, trainer=weakref.proxy(self))
        names = lazy_dataset_names(cfg.dataloader.train)
        self.checkpointer.class_names = MetadataCatalog.get(names[0]).get("thing_classes", None) if names else None
        self.start_iter = 0
        self.max_iter = int(cfg.train.max_iter)
        self.cfg = cfg
        self.last_eval_results = None  # of the last evaluation during training
        self.register_hooks(self.build_hooks())

    @property
    def model(self):
        return self._trainer.model

    @property
    def optimizer(self):
        return self._trainer.optimizer

    @property
    def data_loader(self):
        return self._trainer.data_loader

    def build_hooks(self):
        cfg = self.cfg
        main = comm.is_main_process()

        def test_and_save_results():
            self.last_eval_results = lazy_test(cfg, self.model)
            return self.last_eval_results

        hooks = [
            d2_hooks.IterationTimer(),
            d2_hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            d2_hooks.PeriodicCheckpointer(self.checkpointer, **cfg.train.checkpointer) if main else None,
            d2_hooks.EvalHook(cfg.train.eval_period, test_and_save_results),
        ]
        if main:
            writers = default_writers(cfg.train.output_dir, self.max_iter)
            hooks.append(d2_hooks.PeriodicWriter(writers, period=cfg.train.log_period))
        hooks.append(InterruptHook())  # last: saves after the scheduler and writers did the iteration
        return hooks

    def resume_or_load(self, resume: bool = True):
        """``train.init_checkpoint``, or with ``resume`` the last checkpoint of ``train.output_dir``."""
        self.checkpointer.resume_or_load(self.cfg.train.init_checkpoint, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1  # the checkpoint holds the iteration that finished

    def train(self):
        super().train(self.start_iter, self.max_iter)
        return self.last_eval_results

    def run_step(self):
        self._trainer.iter = self.iter
        self._trainer.run_step()
        self.skipped_images.put_total(self.storage)  # before the hooks: in this iteration's metrics.json record

    def after_train(self):
        super().after_train()
        self.skipped_images.log_total()

    def state_dict(self):
        ret = super().state_dict()
        ret[STEP_STATE_KEY] = self._trainer.state_dict()  # where DefaultTrainer keeps it
        ret["bad_images_skipped"] = self.skipped_images.state_dict()  # the total continues after --resume
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict[STEP_STATE_KEY])
        self.skipped_images.load_state_dict(state_dict.get("bad_images_skipped", {}))

    def nonfinite_loss_hints(self) -> str:
        """Hints appended to :class:`~yolact_d2.runtime.finite_loss.NonFiniteLossError`."""
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        batch = self.cfg.dataloader.train.get("total_batch_size", "?")
        lines = [
            "Hints:",
            f"- learning rate vs batch size: the LR is {lr:.3g} now (optimizer.lr {self.cfg.optimizer.lr:g}) for "
            f"dataloader.train.total_batch_size {batch}; YOLACT uses 1e-3 for 8 images. Lower optimizer.lr, "
            "lengthen the warm-up (lr_multiplier.warmup_iters) or set optimizer.clip_gradients.",
            "- BatchNorm with tiny batches: with fewer than about 6 images per process use 'FrozenBN' "
            "(model.backbone.bottom_up.stem.norm and .stages.norm).",
            "- the data: look for degenerate boxes or masks in the images of this iteration.",
        ]
        if self.checkpointer.has_checkpoint():
            lines.append(f"The last complete checkpoint is {self.checkpointer.get_checkpoint_file()}: "
                         "after changing the config, continue from it with --resume.")
        else:
            lines.append("No checkpoint was written yet (train.checkpointer.period): training has to restart "
                         "from the beginning.")
        return "\n".join(lines)

