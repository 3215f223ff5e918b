"""Composite normalization ops: same values as the kernels, right nested derivatives, routed by a mode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from conslaw import composite as C
from conslaw.composite import UNVERIFIED_NATIVE_OPS, composite_ops
from conslaw.errors import ConslawError
from conslaw.nn import analysis_copy

DT = torch.float64


def rn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def close(a, b, tol=1e-12):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("shape,normalized", [((5, 4), (4,)), ((2, 3, 4), (3, 4)), ((7,), 7)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("eps", [1e-5, 1e-2, 0.0])
def test_layer_norm_values(shape, normalized, affine, eps):
    x = rn(*shape) * 3 + 1
    wshape = (normalized,) if isinstance(normalized, int) else normalized
    w, b = (rn(*wshape, seed=1), rn(*wshape, seed=2)) if affine else (None, None)
    assert close(C.layer_norm(x, normalized, w, b, eps), F.layer_norm(x, wshape, w, b, eps))
    assert close(C.layer_norm(x, normalized), F.layer_norm(x, wshape))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_values_and_running_stats_untouched(shape, affine, training):
    x = rn(*shape) * 2 + 0.5
    w, b = (rn(3, seed=1), rn(3, seed=2)) if affine else (None, None)
    rm, rv = rn(3, seed=3), rn(3, seed=4).abs() + 0.3
    rm0, rv0 = rm.clone(), rv.clone()
    expected = F.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)  # native updates its copies
    assert close(C.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5), expected)
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)
    if training:
        assert close(C.batch_norm(x, None, None, w, b, True, eps=1e-3), F.batch_norm(x, None, None, w, b, True,
                                                                                      eps=1e-3))


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 4)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm_values(shape, affine, use_input_stats):
    x = rn(*shape) * 2 - 1
    w, b = (rn(3, seed=1), rn(3, seed=2)) if affine else (None, None)
    rm, rv = rn(3, seed=3), rn(3, seed=4).abs() + 0.3
    expected = F.instance_norm(x, rm.clone(), rv.clone(), w, b, use_input_stats, 0.1, 1e-5)
    assert close(C.instance_norm(x, rm, rv, w, b, use_input_stats, 0.1, 1e-5), expected)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", [(2, 6), (2, 6, 5), (1, 6, 2, 3)])
def test_group_norm_values(groups, affine, shape):
    x = rn(*shape) * 2 + 1
    w, b = (rn(6, seed=1), rn(6, seed=2)) if affine else (None, None)
    if groups == 6 and shape == (2, 6):
        return  # one value per group: both raise
    assert close(C.group_norm(x, groups, w, b, 1e-4), F.group_norm(x, groups, w, b, 1e-4))


@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("affine", [False, True])
def test_rms_norm_and_gelu_values(eps, affine):
    x = rn(3, 2, 5) * 2
    w = rn(2, 5, seed=1) if affine else None
    assert close(C.rms_norm(x, (2, 5), w, eps), F.rms_norm(x, (2, 5), w, eps))
    big = torch.cat([x.reshape(-1) * 10, torch.tensor([-40.0, 40.0], dtype=DT)])
    for approximate in ("none", "tanh"):
        assert close(C.gelu(big, approximate), F.gelu(big, approximate=approximate))


def test_eps_zero_is_exactly_scale_invariant():
    x, t = rn(4, 6), rn(4, 6, seed=1)
    for f in (lambda z: C.layer_norm(z, (6,), eps=0.0), lambda z: C.rms_norm(z, (6,), eps=0.0),
              lambda z: C.group_norm(z.reshape(2, 4, 3), 2, eps=0.0),
              lambda z: C.batch_norm(z, None, None, training=True, eps=0.0)):
        assert close(f(3.7 * x), f(x), 1e-14)
        _, along_x = jvp(f, (x,), (x,))  # D f(x) x = 0 for a scale-invariant f
        assert float(along_x.abs().max()) < 1e-13
        assert float(jvp(f, (x,), (t,))[1].abs().max()) > 1e-3


def nested_jvp(f, x, u, v):
    """D^2 f(x)[u, v] by jvp of jvp."""
    return jvp(lambda s: jvp(f, (s,), (u,))[1], (x,), (v,))[1]


def fd_nested(f, x, u, v, h=1e-5):
    d1 = lambda s: jvp(f, (s,), (u,))[1]  # noqa: E731
    return (d1(x + h * v) - d1(x - h * v)) / (2 * h)


def rel(a, b):
    return float((a - b).norm() / max(a.norm(), b.norm(), 1e-300))


def test_mode_intercepts_layer_norm_module_under_vmap_and_jvp():
    """nn.LayerNorm's forward under functional_call + vmap + nested jvp runs the composite inside the mode."""
    ln = nn.LayerNorm(5).to(DT)
    params = {"weight": rn(5, seed=1), "bias": rn(5, seed=2)}
    xs, us, vs = rn(3, 4, 5), rn(3, 4, 5, seed=3), rn(3, 4, 5, seed=4)

    def f(x):
        return functional_call(ln, params, (x,))

    with composite_ops():
        inside = vmap(lambda x, u, v: nested_jvp(f, x, u, v))(xs, us, vs)
    native = vmap(lambda x, u, v: nested_jvp(f, x, u, v))(xs, us, vs)
    for i in range(3):
        truth = fd_nested(lambda x: C.layer_norm(x, (5,), params["weight"], params["bias"]), xs[i], us[i], vs[i])
        assert rel(inside[i], truth) < 1e-7
    if max(rel(native[i], inside[i]) for i in range(3)) < 1e-7:
        pytest.skip("native layer_norm has right nested jvps in this torch: the composite is no longer needed")


def test_mode_routes_the_torch_namespace_and_leaves_other_ops():
    x, u, v = rn(4, 5), rn(4, 5, seed=1), rn(4, 5, seed=2)
    w = rn(5, seed=3)
    expected = nested_jvp(lambda s: C.layer_norm(s, (5,), w, None, 1e-5), x, u, v)
    with composite_ops():
        got = nested_jvp(lambda s: torch.layer_norm(s, [5], w, None, 1e-5, True), x, u, v)
        assert close(torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, True),
                     C.batch_norm(x, None, None, training=True))
        assert close(F.softmax(x, -1), torch.softmax(x, -1), 0.0)
    assert close(got, expected, 1e-13)
    assert rel(got, fd_nested(lambda s: F.layer_norm(s, (5,), w), x, u, v)) < 1e-7
    with composite_ops(["rms_norm"]):
        assert "NativeLayerNorm" in type(F.layer_norm(x.requires_grad_(), (5,)).grad_fn).__name__
    assert set(UNVERIFIED_NATIVE_OPS) <= set(C.COMPOSITES)


def test_batchnorm2d_training_in_functional_call_and_vmap_keeps_running_stats():
    bn = nn.BatchNorm2d(3).to(DT).train()
    with torch.no_grad():
        bn.running_mean.copy_(rn(3, seed=5))
        bn.running_var.copy_(rn(3, seed=6).abs() + 0.5)
    before = {k: v.clone() for k, v in bn.named_buffers()}
    params = {"weight": rn(3, seed=1), "bias": rn(3, seed=2)}
    xs = rn(4, 5, 3, 2, 2) * 2 + 1  # 4 batches of 5 images

    def out(module, p, x):
        return functional_call(module, p, (x,))

    with composite_ops():  # the module's own buffers, running statistics included
        ys = vmap(out, in_dims=(None, None, 0))(bn, params, xs)
    for i in range(4):
        expected = F.batch_norm(xs[i], None, None, params["weight"], params["bias"], True)
        assert close(ys[i], expected)
    for name in ("running_mean", "running_var"):
        assert torch.equal(bn.get_buffer(name), before[name])
    # under grad/jvp the module's own in-place num_batches_tracked += 1 is refused by torch.func: analysis copies
    # patch it away (replace_all_batch_norm_modules_); the composite then differentiates like any op
    copy = analysis_copy(bn)
    loss = lambda p, x: out(copy, p, x).square().mean()  # noqa: E731
    with composite_ops():
        gs = vmap(grad(loss), in_dims=(None, 0))(params, xs)
        _, tangent = jvp(lambda w: loss({**params, "weight": w}, xs[0]), (params["weight"],), (rn(3, seed=7),))
    assert torch.isfinite(gs["weight"]).all() and gs["weight"].shape == (4, 3) and torch.isfinite(tangent)
    for name in ("running_mean", "running_var"):
        assert torch.equal(bn.get_buffer(name), before[name])


@pytest.mark.parametrize("call,match", [
    (lambda: C.layer_norm(rn(3, 4), (5,)), "does not end with"),
    (lambda: C.layer_norm(rn(3, 4), (4,), rn(3)), "weight has shape"),
    (lambda: C.batch_norm(rn(1, 3), None, None, training=True), "one value per channel"),
    (lambda: C.batch_norm(rn(4, 3), None, None, training=False), "running statistics"),
    (lambda: C.instance_norm(rn(2, 3, 1)), "one spatial element"),
    (lambda: C.group_norm(rn(2, 6, 3), 4), "multiple of num_groups"),
    (lambda: C.gelu(rn(3), "cubic"), "approximate"),
    (lambda: composite_ops(["softmax"]), "no composite"),
])
def test_bad_input_errors(call, match):
    with pytest.raises(ConslawError, match=match):
        call()
