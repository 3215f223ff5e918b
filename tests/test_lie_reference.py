"""The Lie engine against exact sympy brackets and dense ranks (brute force)."""

import itertools

import numpy as np
import pytest
import sympy as sp
import torch

from conslaw import catalog
from conslaw.fields import FieldSource, ReparamFields
from conslaw.lie import bracket_value, lie_trace_dimension
from conslaw.params import ParamSpace
from conslaw.rank import numerical_rank


class QuadraticFields(FieldSource):
    """X_i(theta) = A_i theta + B_i(theta, theta), integer coefficients; chi_c = sum_i c_i X_i."""

    kind = "test-polynomial"

    def __init__(self, A, B):
        self.A, self.B = A, B
        self.space = ParamSpace({"theta": (A.shape[1],)})

    def sample(self, n, generator):
        return torch.randn(n, self.A.shape[0], generator=generator)

    def field(self, theta, c):
        return torch.einsum("i,ikj,j->k", c, self.A, theta) + torch.einsum("i,ikjl,j,l->k", c, self.B, theta, theta)

    def sympy_fields(self, xs):
        fields = []
        for i in range(self.A.shape[0]):
            fields.append(sp.Matrix([
                sum(int(self.A[i, k, j]) * xs[j] for j in range(len(xs)))
                + sum(int(self.B[i, k, j, m]) * xs[j] * xs[m] for j in range(len(xs)) for m in range(len(xs)))
                for k in range(len(xs))]))
        return fields


def sympy_bracket(X, Y, xs):
    """[X, Y] = DY X - DX Y, exactly."""
    return Y.jacobian(xs) * X - X.jacobian(xs) * Y


def random_fields(D, d, seed, density=0.3, rotations=False):
    """Random integer quadratic fields; ``rotations``: sparse antisymmetric linear fields only
    (tangent to spheres, so |theta|^2 is conserved and the trace has dimension < D)."""
    rng = np.random.default_rng(seed)
    A = rng.integers(-2, 3, (d, D, D)) * (rng.random((d, D, D)) < density)
    B = rng.integers(-2, 3, (d, D, D, D)) * (rng.random((d, D, D, D)) < density / D)
    if rotations:
        A, B = A - A.transpose(0, 2, 1), 0 * B
    return QuadraticFields(torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64))


def test_nested_brackets_equal_exact_sympy_brackets():
    source = random_fields(4, 3, seed=0, density=0.6)
    xs = sp.symbols("x0:4")
    gens = source.sympy_fields(xs)
    point = [sp.Rational(1, 2), sp.Rational(-3, 4), sp.Rational(2, 3), sp.Rational(5, 4)]
    theta = torch.tensor([float(v) for v in point])
    eye = torch.eye(3)
    for i, j, k in [(0, 1, 2), (2, 0, 1), (1, 1, 0)]:
        exact2 = sympy_bracket(gens[i], gens[j], xs).subs(dict(zip(xs, point, strict=True)))
        value2, _ = bracket_value(source, theta, (eye[i], eye[j]))
        np.testing.assert_allclose(value2.numpy(), np.array(exact2, dtype=float).ravel(), rtol=1e-12, atol=1e-12)
        inner = sympy_bracket(gens[j], gens[k], xs)
        exact3 = sympy_bracket(gens[i], inner, xs).subs(dict(zip(xs, point, strict=True)))
        value3, _ = bracket_value(source, theta, (eye[i], eye[j], eye[k]))
        np.testing.assert_allclose(value3.numpy(), np.array(exact3, dtype=float).ravel(), rtol=1e-12, atol=1e-12)


def exact_lie_dimension(source, point, max_level=5):
    """Brute force: all right-nested brackets of generators up to max_level, exact rank at point."""
    xs = sp.symbols(f"x0:{len(point)}")
    gens = source.sympy_fields(xs)
    subs = dict(zip(xs, point, strict=True))
    level, values, ranks = list(gens), [], []
    for _ in range(max_level):
        values += [list(f.subs(subs)) for f in level]
        ranks.append(sp.Matrix(values).rank())
        if ranks[-1] == len(point):
            break
        level = [sympy_bracket(g, f, xs).expand() for g, f in itertools.product(gens, level)]
    return ranks[-1]


@pytest.mark.parametrize("D, d, seed, rotations, exact_dim", [
    (4, 2, 1, False, 4), (4, 1, 2, False, 1), (5, 2, 3, False, 5), (3, 2, 4, False, 3),
    (4, 2, 5, True, 3), (5, 2, 6, True, 4), (6, 1, 7, True, 1)])
def test_engine_dimension_equals_brute_force_exact_dimension(D, d, seed, rotations, exact_dim):
    source = random_fields(D, d, seed, density=0.4, rotations=rotations) if rotations else random_fields(D, d, seed)
    point = [sp.Rational(k + 2, 3) * (-1) ** k for k in range(D)]
    exact = exact_lie_dimension(source, point)
    result = lie_trace_dimension(source, torch.tensor([float(v) for v in point]), seed=seed)
    assert result.dim == exact == exact_dim


def test_engine_dimension_equals_brute_force_on_linear_network_phi():
    # phi = W2 W1 for widths [2, 2, 2]: fields grad phi_i, exact Lie algebra by sympy
    arch = catalog.linear(2, 2, 2)
    xs = sp.symbols("x0:8")
    W1, W2 = sp.Matrix(2, 2, xs[:4]), sp.Matrix(2, 2, xs[4:])
    phi = list(W2 * W1)
    gens = [sp.Matrix([sp.diff(p, x) for x in xs]) for p in phi]
    point = [sp.Rational(v) for v in (1, -2, 3, 1, 2, 1, -1, 3)]
    subs = dict(zip(xs, point, strict=True))
    values = [list(g.subs(subs)) for g in gens]
    level = gens
    for _ in range(3):
        level = [sympy_bracket(g, f, xs).expand() for g, f in itertools.product(gens, level)]
        values += [list(f.subs(subs)) for f in level]
    exact = sp.Matrix(values).rank()
    result = lie_trace_dimension(ReparamFields(arch.space, arch.phi), torch.tensor([float(v) for v in point]))
    assert exact == 5 and result.dim == exact  # 8 - r(r+1)/2 with r = 2


@pytest.mark.parametrize("rank", [0, 1, 7, 20])
def test_numerical_rank_equals_dense_svd_rank(rank):
    gen = torch.Generator().manual_seed(rank)
    rows = torch.randn(30, rank, generator=gen) @ torch.randn(rank, 20, generator=gen) if rank else torch.zeros(30, 20)
    result = numerical_rank(rows)
    assert result.rank == np.linalg.matrix_rank(rows.numpy()) == rank
    if 0 < rank < 20:
        assert result.gap > 1e8


def test_level_one_rank_equals_dense_jacobian_rank():
    arch = catalog.relu(3, 4, 3, bias=True)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    jac = torch.func.jacrev(lambda t: arch.phi(arch.space.unflatten(t)))(theta)
    result = lie_trace_dimension(arch.fields(), theta)
    assert result.levels[0].added == np.linalg.matrix_rank(jac.numpy())


def test_same_seed_same_result_and_different_seed_same_count():
    arch = catalog.attention(3, 2, 2)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    a = lie_trace_dimension(arch.fields("model"), theta, seed=7)
    b = lie_trace_dimension(arch.fields("model"), theta, seed=7)
    c = lie_trace_dimension(arch.fields("model"), theta, seed=8)
    assert torch.equal(a.basis, b.basis) and a.smallest_kept == b.smallest_kept
    assert a.dim == c.dim == 10


def test_engine_is_not_told_the_answer_and_reports_saturation():
    arch = catalog.linear(3, 4, 2)
    result = lie_trace_dimension(arch.fields(), arch.space.sample(generator=torch.Generator().manual_seed(0)))
    assert result.saturated and result.levels[-1].added == 0
    assert [lv.added for lv in result.levels] == [6, 4, 0]
    assert result.spectral_gap > 1e8
