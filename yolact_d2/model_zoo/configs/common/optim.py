# The optimizer of SOLVER.OPTIMIZER (yolact_d2.solver.make_optimizer): SGD as the original (momentum 0.9,
# weight decay 5e-4 on every parameter, BN and biases included: docs/MODEL.md), or fused AdamW.
# params.model is set to the model before instantiating (as Detectron2's lazyconfig_train_net does).
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

from yolact_d2.solver import make_optimizer

SGD = L(make_optimizer)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}", weight_decay_norm=5e-4, weight_decay_bias=5e-4, bias_lr_factor=1.0
    ),
    name="SGD",
    lr=1e-3,
    momentum=0.9,
    weight_decay=5e-4,
    clip_gradients=None,  # or dict(clip_type="norm", clip_value=10.0, norm_type=2.0): SOLVER.CLIP_GRADIENTS
)

AdamW = L(make_optimizer)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}", weight_decay_norm=0.0, weight_decay_bias=0.0, bias_lr_factor=1.0
    ),
    name="ADAMW",  # betas 0.9 / 0.999, decoupled weight decay, fused
    lr=1e-3,
    weight_decay=0.05,
    clip_gradients=None,
)
