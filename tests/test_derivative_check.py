"""derivative_check: the engine's brackets against central differences catch wrong higher derivatives."""

import json

import pytest
import torch
from torch import nn

from conslaw.composite import composite_ops
from conslaw.derivative_check import derivative_check
from conslaw.errors import ConslawError
from conslaw.fields import FieldSource, LossGradFields, ModelFields, ReparamFields
from conslaw.nn import analysis_copy
from conslaw.params import ParamSpace

DT = torch.float64


def loss_fields(*layers, input_shape=(2, 3)):
    with torch.random.fork_rng():  # the layers' initial values; the global generator is left as it was
        torch.manual_seed(0)
        model = analysis_copy(nn.Sequential(*layers).to(DT))
    source = LossGradFields(model, torch.zeros(*input_shape, dtype=DT), "mse", batch=4)
    return source, source.space.sample("gaussian", torch.Generator().manual_seed(1))


def layer_norm_model_fields():
    """Fields of x -> W2 layer_norm(W1 x), the model calling the native op itself (ModelFields adds no composite)."""
    space = ParamSpace({"W1": (4, 3), "W2": (2, 4)})

    def model(p, x):
        return p["W2"] @ torch.nn.functional.layer_norm(p["W1"] @ x, (4,))

    source = ModelFields(space, model, lambda n, g: torch.randn(n, 3, generator=g, dtype=DT), inputs_per_sample=4)
    return source, space.sample("gaussian", torch.Generator().manual_seed(1))


@pytest.mark.parametrize("gradient", [True, False])
def test_layer_norm_brackets_right_with_composites_wrong_without(gradient):
    # both ways of taking the brackets: reverse mode through the symmetric Hessian (gradient fields), forward mode
    source, theta = layer_norm_model_fields()
    source.gradient = gradient
    with composite_ops():
        good = derivative_check(source, theta, levels=3, samples=2)
    assert good.ok and good.worst_relative_error < 1e-6, good.as_dict()
    assert set(good.levels) == {2, 3}
    native = derivative_check(source, theta, levels=3, samples=2)
    assert native.levels[2] < 1e-6  # the first derivative of the native kernel's gradient is right ...
    assert not native.ok and native.levels[3] > 1e-3  # ... the next one is not (measured 8e-2 and 2e-2)


def test_loss_gradient_fields_use_the_composites():
    source, theta = loss_fields(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    check = derivative_check(source, theta, levels=3, samples=2)
    assert check.ok and check.worst_relative_error < 1e-6, check.as_dict()


@pytest.mark.parametrize("gradient", [True, False])
def test_gelu_tanh_nan_caught_and_fixed(gradient):
    # pre-activations ~40: the native tanh-gelu's third derivative is NaN for |x| >= 30
    space = ParamSpace({"W1": (4, 3), "W2": (2, 4)})

    def model(p, x):
        return p["W2"] @ torch.nn.functional.gelu(p["W1"] @ x, approximate="tanh")

    source = ModelFields(space, model, lambda n, g: 40 * torch.randn(n, 3, generator=g, dtype=DT), inputs_per_sample=4)
    source.gradient = gradient
    theta = space.sample("gaussian", torch.Generator().manual_seed(1))
    with composite_ops(["gelu"]):
        good = derivative_check(source, theta, levels=3)
    assert good.ok and good.worst_relative_error < 1e-6
    native = derivative_check(source, theta, levels=3)
    assert native.levels[2] < 1e-6 and not native.ok
    assert native.as_dict()["worst_relative_error"] is None  # NaN, reported as null in JSON


def taylor_cube(x, c):
    """x^3 as its Taylor expansion about a detached copy: right value and 1st/3rd derivatives, 2nd times c."""
    xd = x.detach()
    e = x - xd
    return xd ** 3 + 3 * xd ** 2 * e + 3 * c * xd * e * e + e * e * e


class TaylorCube(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return taylor_cube(x, self.c)


def test_wrong_second_derivative_is_caught():
    right = derivative_check(*loss_fields(nn.Linear(3, 4), TaylorCube(1.0), nn.Linear(4, 2)))
    wrong = derivative_check(*loss_fields(nn.Linear(3, 4), TaylorCube(2.0), nn.Linear(4, 2)))
    assert right.ok and right.worst_relative_error < 1e-7
    assert not wrong.ok and wrong.levels[2] > 1e-2


class Square3(torch.autograd.Function):
    """3 x^2 (the derivative of x^3) with derivative 6 x * factor (factor 1: the right rule)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, factor):
        return 3 * x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 6 * x * ctx.factor, None

    @staticmethod
    def jvp(ctx, x_t, _):
        (x,) = ctx.saved_tensors
        return x_t * 6 * x * ctx.factor


class Cube(torch.autograd.Function):
    """x^3 whose derivative rules call Square3."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, factor):
        return x * x * x

    setup_context = staticmethod(Square3.setup_context)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * Square3.apply(x, ctx.factor), None

    @staticmethod
    def jvp(ctx, x_t, _):
        (x,) = ctx.saved_tensors
        return x_t * Square3.apply(x, ctx.factor)


class CubeFunction(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return Cube.apply(x, self.factor)


def test_autograd_function_with_wrong_rule_is_caught():
    wrong = derivative_check(*loss_fields(nn.Linear(3, 4), CubeFunction(2.0), nn.Linear(4, 2)))
    assert not wrong.ok and wrong.levels[2] > 1e-2
    source, theta = loss_fields(nn.Linear(3, 4), CubeFunction(1.0), nn.Linear(4, 2))
    # a custom Function's backward need not be the transpose of its derivative: forward mode by default
    assert source.custom_functions == ["CubeBackward"] and not source.gradient
    # right rules, but torch.func (2.13) does not differentiate through a Function's jvp rule again: the
    # nested derivative comes out 0, and the check sees it
    forward = derivative_check(source, theta)
    assert forward.levels[2] < 1e-7
    # declared a gradient (its backward is right here): reverse mode differentiates the backward rule, which
    # calls Square3 again, and every level is right
    source.gradient = True
    right = derivative_check(source, theta)
    assert right.ok and right.levels[2] < 1e-7 and right.levels[3] < 1e-7
    if forward.ok:
        pytest.skip(f"torch {torch.__version__} differentiates autograd.Function jvp rules to higher order")
    assert forward.levels[3] > 1e-2


def test_vanishing_brackets_read_as_round_off():
    """phi = u * v (elementwise): the fields are linear and commute, every bracket is 0 by cancellation."""
    space = ParamSpace({"u": (3,), "v": (3,)})
    source = ReparamFields(space, phi=lambda p: p["u"] * p["v"])
    result = derivative_check(source, space.sample("gaussian", torch.Generator().manual_seed(0)), levels=3)
    assert result.ok and result.levels[2] < 1e-8 and result.checked[2] == 2
    assert result.checked[3] == 0 and result.levels[3] is None  # the inner brackets are round-off: not scored
    assert result.as_dict()["levels"][1] == {"level": 3, "worst_relative_error": None, "checked": 0}


class NaNFields(FieldSource):
    space = ParamSpace({"w": (2,)})

    def sample(self, n, generator):
        return torch.randn(n, 2, generator=generator, dtype=DT)

    def field(self, theta, p):
        return theta * p * float("nan")


def test_report_and_bad_arguments():
    space = ParamSpace({"u": (2,), "v": (2,)})
    source = ReparamFields(space, phi=lambda p: torch.outer(p["u"], p["v"]))
    theta = space.sample("gaussian", torch.Generator().manual_seed(0))
    report = derivative_check(source, theta, levels=2, samples=1, generator=torch.Generator().manual_seed(3))
    d = json.loads(json.dumps(report.as_dict()))
    assert {"levels", "worst_relative_error", "threshold", "ok", "samples"} <= set(d)
    assert d["ok"] is True and d["samples"] == 1 and d["levels"][0]["level"] == 2 and d["threshold"] == 1e-4
    nan = derivative_check(NaNFields(), torch.ones(2, dtype=DT), levels=2)
    assert not nan.ok and nan.as_dict()["worst_relative_error"] is None
    for kwargs, match in (({"levels": 1}, "levels >= 2"), ({"samples": 0}, "samples >= 1"),
                          ({"step": 2.0}, "step must be")):
        with pytest.raises(ConslawError, match=match):
            derivative_check(source, theta, **kwargs)
    with pytest.raises(ConslawError):
        derivative_check(source, torch.ones(3, dtype=DT))


def test_engine_counts_layer_norm_laws_with_composites():
    """Linear(3,4)-LayerNorm(4)-Linear(4,2): 4 laws from the mean subtraction (shifting every pre-activation of
    the first layer by the same a.x + c leaves the output unchanged: W1 + 1 a^T, b1 + c 1) and 4 from the
    rescalings gamma_i -> l gamma_i, W2[:, i] -> W2[:, i] / l. With native layer_norm (torch 2.13) the wrong
    level-3 brackets add 4 spurious directions and the engine reports 4 laws, with an equally clean gap."""
    from conslaw.lie import lie_trace_dimension

    source, theta = loss_fields(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with composite_ops():
        result = lie_trace_dimension(source, theta, max_level=5)
    assert (result.D, result.num_laws, result.saturated) == (34, 8, True)
    assert result.spectral_gap > 1e5
