"""Brackets of gradient fields by reverse mode (the symmetric Hessian), against exact sympy and the jvp path.

For chi_p = grad s_p the engine takes D chi_p(theta) v as a vector-Jacobian product
(:func:`conslaw.lie.bracket_value`); these tests check it independently: exact sympy
brackets of integer cubic potentials, the forward-mode path on the same fields, and
the derivative check catching a non-gradient field declared as a gradient.
"""

import numpy as np
import sympy as sp
import torch
from torch import nn
from torch.func import grad

from conslaw.derivative_check import derivative_check
from conslaw.fields import FieldSource, LossGradFields
from conslaw.lie import bracket_value, lie_trace_dimension
from conslaw.params import ParamSpace


class CubicPotentialFields(FieldSource):
    """chi_c = grad s_c, s_c(theta) = sum_i c_i (theta^T S_i theta / 2 + T_i(theta, theta, theta)), integer S_i, T_i."""

    def __init__(self, S, T, gradient=True):
        self.S, self.T, self.gradient = S, T, gradient
        self.space = ParamSpace({"theta": (S.shape[1],)})

    def sample(self, n, generator):
        return torch.randn(n, self.S.shape[0], generator=generator, dtype=torch.float64)

    def potential(self, theta, c):
        return (torch.einsum("i,ijk,j,k->", c, self.S, theta, theta) / 2
                + torch.einsum("i,ijkl,j,k,l->", c, self.T, theta, theta, theta))

    def field(self, theta, c):
        return grad(self.potential)(theta, c)

    def sympy_fields(self, xs):
        out = []
        for i in range(self.S.shape[0]):
            s = sum(sp.Rational(int(self.S[i, j, k]), 2) * xs[j] * xs[k]
                    for j in range(len(xs)) for k in range(len(xs)))
            s += sum(int(self.T[i, j, k, m]) * xs[j] * xs[k] * xs[m]
                     for j in range(len(xs)) for k in range(len(xs)) for m in range(len(xs)))
            out.append(sp.Matrix([sp.diff(s, x) for x in xs]))
        return out


def cubic_fields(D=4, d=3, seed=0, gradient=True):
    rng = np.random.default_rng(seed)
    S = rng.integers(-2, 3, (d, D, D))
    T = rng.integers(-2, 3, (d, D, D, D)) * (rng.random((d, D, D, D)) < 0.3)
    return CubicPotentialFields(torch.tensor(S + S.transpose(0, 2, 1), dtype=torch.float64),
                                torch.tensor(T, dtype=torch.float64), gradient)


def sympy_bracket(X, Y, xs):
    return Y.jacobian(xs) * X - X.jacobian(xs) * Y


def test_gradient_brackets_equal_exact_sympy_brackets_at_levels_2_and_3():
    source = cubic_fields()
    assert source.gradient
    xs = sp.symbols("x0:4")
    gens = source.sympy_fields(xs)
    point = [sp.Rational(1, 2), sp.Rational(-3, 4), sp.Rational(2, 3), sp.Rational(5, 4)]
    subs = dict(zip(xs, point, strict=True))
    theta = torch.tensor([float(v) for v in point], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    for i, j, k in [(0, 1, 2), (2, 0, 1), (1, 2, 0)]:
        exact2 = np.array(sympy_bracket(gens[i], gens[j], xs).subs(subs), dtype=float).ravel()
        exact3 = np.array(sympy_bracket(gens[i], sympy_bracket(gens[j], gens[k], xs), xs).subs(subs),
                          dtype=float).ravel()
        assert np.abs(exact2).max() > 1 and np.abs(exact3).max() > 1  # not a vanishing bracket
        value2, _ = bracket_value(source, theta, (eye[i], eye[j]))
        value3, _ = bracket_value(source, theta, (eye[i], eye[j], eye[k]))
        np.testing.assert_allclose(value2.numpy(), exact2, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(value3.numpy(), exact3, rtol=1e-12, atol=1e-10)


def test_reverse_mode_and_forward_mode_brackets_agree_on_a_layernorm_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.GELU(), nn.Linear(4, 2)).double()
    source = LossGradFields(model, torch.randn(2, 3, dtype=torch.float64), loss="mse", batch=3)
    theta = source.theta()
    gen = torch.Generator().manual_seed(1)
    for level in (2, 3, 4):
        ps = tuple(torch.utils._pytree.tree_map(lambda t: t[0], source.sample(1, gen)) for _ in range(level))
        source.gradient = True
        reverse, reverse_scale = bracket_value(source, theta, ps)
        source.gradient = False
        forward, forward_scale = bracket_value(source, theta, ps)
        assert float(forward.norm()) > 1e-3 * float(forward_scale)
        assert float((reverse - forward).norm()) <= 1e-10 * float(forward_scale)
        assert abs(float(reverse_scale) - float(forward_scale)) <= 1e-10 * float(forward_scale)


def test_derivative_check_catches_a_non_gradient_field_declared_as_a_gradient():
    # X_c(theta) = A_c theta with A_c not symmetric: the vjp gives A_c^T v instead of A_c v
    class LinearFields(FieldSource):
        gradient = True  # wrong on purpose

        def __init__(self):
            self.A = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
            self.space = ParamSpace({"theta": (2,)})

        def sample(self, n, generator):
            return torch.randn(n, 2, generator=generator, dtype=torch.float64)

        def field(self, theta, c):
            return torch.einsum("i,ijk,k->j", c, self.A, theta)

    wrong = LinearFields()
    theta = torch.tensor([0.7, -1.3], dtype=torch.float64)
    assert not derivative_check(wrong, theta, levels=2).ok
    wrong.gradient = False  # declared right: the jvp path, and the check passes
    assert derivative_check(wrong, theta, levels=2).ok
    assert lie_trace_dimension(wrong, theta).dim == 2  # sl(2) acts transitively off the origin


class GradReverse(torch.autograd.Function):
    """Identity forward, backward -g / 2: a gradient-reversal layer (domain-adversarial training)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return -0.5 * g

    @staticmethod
    def jvp(ctx, t):
        return t


class Adversarial(nn.Module):
    """z = F x; outputs H z and D grl(z): the training field is not the gradient of any loss."""

    def __init__(self):
        super().__init__()
        self.f, self.h, self.d = nn.Linear(3, 3, bias=False), nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False)

    def forward(self, x):
        z = self.f(x)
        return torch.cat([self.h(z), self.d(GradReverse.apply(z))], -1)


def test_a_custom_autograd_function_keeps_forward_mode_and_the_right_count():
    # Under this field F F^T - H^T H + D^T D / 2 is conserved (its time derivative cancels term by term): 6 laws.
    # Reverse-mode brackets (which assume a symmetric Jacobian) counted 0.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Adversarial().double()
    source = LossGradFields(model, torch.randn(4, 3, dtype=torch.float64), loss="mse", batch=4)
    assert source.custom_functions == ["GradReverseBackward"] and not source.gradient
    theta = source.theta()
    result = lie_trace_dimension(source, theta, seed=0)
    assert result.lie_laws == 6 and result.spectral_gap > 1e6
    assert derivative_check(source, theta, exemplars=result.exemplars).ok

    def conserved(t):
        p = source.space.unflatten(t)
        f, h, d = p["f.weight"], p["h.weight"], p["d.weight"]
        m = f @ f.T - h.T @ h + d.T @ d / 2
        return m[torch.triu_indices(3, 3).unbind()]

    jac = torch.func.jacrev(conserved)(theta)  # (6, D): the gradients of the 6 entries
    fields = source.evaluate(theta, source.sample(8, torch.Generator().manual_seed(1)))
    assert float((jac @ fields.T).abs().max()) < 1e-12 * float(jac.norm() * fields.norm())
    assert torch.linalg.matrix_rank(jac) == 6
    source.gradient = True  # the symmetric-Jacobian assumption, wrong here: another count, and the check fails
    wrong = lie_trace_dimension(source, theta, seed=0)
    assert wrong.lie_laws != 6 and not derivative_check(source, theta, exemplars=wrong.exemplars).ok
