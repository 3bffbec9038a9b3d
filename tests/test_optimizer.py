"""YolactTrainer.build_optimizer: SOLVER.OPTIMIZER selects SGD (the original's) or AdamW, both
with Detectron2's per-parameter weight decay and gradient clipping."""
import pytest
import torch
from torch import nn

from yolact_d2.engine import YolactTrainer

from conftest import tiny_cfg


class _ConvNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.norm = nn.GroupNorm(2, 4)


def _cfg(*opts):
    return tiny_cfg(opts=[
        "SOLVER.BASE_LR", 0.002, "SOLVER.WEIGHT_DECAY", 0.05, "SOLVER.WEIGHT_DECAY_NORM", 0.0,
        "SOLVER.WEIGHT_DECAY_BIAS", 0.01, "SOLVER.MOMENTUM", 0.8, *opts,
    ])


def _decay_of(optimizer, tensor):
    groups = [g for g in optimizer.param_groups if any(p is tensor for p in g["params"])]
    assert len(groups) == 1
    return groups[0]["weight_decay"]


def test_default_is_the_originals_sgd():
    model = _ConvNorm()
    opt = YolactTrainer.build_optimizer(_cfg(), model)
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 and g["lr"] == 0.002 for g in opt.param_groups)
    assert _decay_of(opt, model.conv.weight) == 0.05
    assert _decay_of(opt, model.conv.bias) == 0.01
    assert _decay_of(opt, model.norm.weight) == 0.0


def test_adamw_with_decay_groups_and_one_exact_step():
    model = _ConvNorm()
    opt = YolactTrainer.build_optimizer(_cfg("SOLVER.OPTIMIZER", "adamw"), model)
    assert isinstance(opt, torch.optim.AdamW)
    assert _decay_of(opt, model.conv.weight) == 0.05
    assert _decay_of(opt, model.norm.weight) == 0.0
    assert _decay_of(opt, model.norm.bias) == 0.01  # Detectron2: WEIGHT_DECAY_BIAS wins for every bias
    # First AdamW step: m/(sqrt(v)+eps) = sign(g) for |g| >> eps, so every weight moves by
    # lr * (sign(g) + decay * w); checked on the conv weight.
    w0 = model.conv.weight.detach().clone()
    model.conv.weight.grad = torch.full_like(w0, -3.0)
    opt.step()
    expected = w0 * (1 - 0.002 * 0.05) + 0.002
    torch.testing.assert_close(model.conv.weight.detach(), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["SGD", "ADAMW"])
def test_foreach_clipping_equals_detectron2_per_parameter_clipping(optimizer):
    """The multi-tensor clipping gives bit-identical gradients to Detectron2's
    maybe_add_gradient_clipping (clip_grad_norm_ on each parameter), with some gradients above
    and some below the limit."""
    from detectron2.solver.build import maybe_add_gradient_clipping

    cfg = _cfg("SOLVER.OPTIMIZER", optimizer, "SOLVER.CLIP_GRADIENTS.ENABLED", True,
               "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1.0)
    torch.manual_seed(0)
    ours_model, ref_model = _ConvNorm(), _ConvNorm()
    ref_model.load_state_dict(ours_model.state_dict())
    ours = YolactTrainer.build_optimizer(cfg, ours_model)
    ref_cls = torch.optim.SGD if optimizer == "SGD" else torch.optim.AdamW
    extra = {"momentum": 0.8} if optimizer == "SGD" else {}
    ref = maybe_add_gradient_clipping(cfg, ref_cls)(
        [{"params": [p]} for p in ref_model.parameters()], lr=0.002, weight_decay=0.0, **extra
    )
    for group in ours.param_groups:
        group["weight_decay"] = 0.0
    for scale in (100.0, 0.01, 3.0):
        for a, b in zip(ours_model.parameters(), ref_model.parameters()):
            g = torch.randn_like(a) * scale
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        for a, b in zip(ours_model.parameters(), ref_model.parameters()):
            assert torch.equal(a.grad, b.grad)  # clipped in place, identically
            if optimizer == "SGD":
                assert torch.equal(a, b)
            else:  # fused AdamW kernel: the same update up to float rounding
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert float(ours_model.conv.weight.grad.norm()) == pytest.approx(1.0, rel=1e-5)  # 3.0 * ~6: clipped


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        YolactTrainer.build_optimizer(_cfg("SOLVER.OPTIMIZER", "LAMB"), _ConvNorm())
