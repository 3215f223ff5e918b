"""Rebalancing: every targeted law reaches its target, the function is unchanged (float64)."""

import pytest
import torch
from torch import nn

from conslaw.errors import ConslawError
from conslaw.models import BUILTINS
from conslaw.rebalance import geometric_mean, rebalance


class AttentionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(6, 3, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        out, _ = self.attn(x, x, x)
        return self.head(out.mean(1))


def cases():
    out = {name: (BUILTINS[name].build, BUILTINS[name].example, BUILTINS[name].loss)
           for name in ("mlp", "cnn", "resnet-block")}
    out["multihead-attention"] = (AttentionModel, lambda: torch.randn(4, 5, 6), "cross_entropy")
    return out


@pytest.mark.parametrize("name", list(cases()))
@pytest.mark.parametrize("target", [0.0, 0.25])
def test_laws_reach_the_target_and_outputs_are_unchanged(name, target):
    if name == "multihead-attention" and target:
        with pytest.raises(ConslawError):
            rebalance(AttentionModel(), torch.randn(4, 5, 6), "cross_entropy", target)
        return
    build, example, loss = cases()[name]
    torch.manual_seed(0)
    model = build().double()
    result = rebalance(model, example().double(), loss, target=target)
    assert result.max_error < 1e-12 < float(abs(result.before - result.targets).max())
    x = torch.randn(16, *example().shape[1:])
    with torch.no_grad():
        before, after = model(x), result.model(x)
    assert (before - after).abs().max() < 1e-12 * before.abs().max()


def test_attention_heads_are_balanced_exactly():
    torch.manual_seed(1)
    result = rebalance(AttentionModel().double(), torch.randn(4, 5, 6), "cross_entropy")
    assert result.heads == 3 and result.max_error < 1e-12
    w = result.model.attn.in_proj_weight
    q, k = w[0:2], w[6:8]
    b = result.model.attn.in_proj_bias
    qa = torch.cat([q, b[0:2, None]], 1)
    ka = torch.cat([k, b[6:8, None]], 1)
    torch.testing.assert_close(qa @ qa.T, ka @ ka.T, rtol=1e-12, atol=1e-12)


def test_geometric_mean_solves_pmp_equals_n():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    m, n = a @ a.T, b @ b.T
    p = geometric_mean(m, n)
    torch.testing.assert_close(p @ m @ p, n)
    torch.testing.assert_close(p, p.T)


def test_a_model_without_symmetries_is_refused():
    with pytest.raises(ConslawError, match="no rescaling or attention laws"):
        rebalance(nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)), torch.randn(4, 3))


@pytest.mark.parametrize("in_place", [False, True])
def test_rebalance_leaves_the_callers_model_alone_unless_asked(in_place):
    model = BUILTINS["resnet-block"].build(seed=3).float()  # float32, training mode, BatchNorm running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    result = rebalance(model, BUILTINS["resnet-block"].example().float(), "cross_entropy", in_place=in_place)
    after = model.state_dict()
    assert [m.training for m in model.modules()] == flags
    assert {k: v.dtype for k, v in after.items()} == {k: v.dtype for k, v in before.items()}
    assert all(v.device == before[k].device for k, v in after.items())
    buffers = {k for k, _ in model.named_buffers()}
    assert all(torch.equal(after[k], before[k]) for k in buffers)  # running statistics never updated
    params = [k for k, _ in model.named_parameters()]
    changed = [k for k in params if not torch.equal(after[k], before[k])]
    if in_place:
        rebalanced = result.model.state_dict()
        assert changed and all(torch.equal(after[k], rebalanced[k].float()) for k in params)
    else:
        assert changed == []
    assert result.max_output_change < 1e-12
