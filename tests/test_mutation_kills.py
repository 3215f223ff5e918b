"""Tests written against surviving mutants of the engine's core (benchmarks/MUTATION.md).

Every expected number is written here, from the paper's formulas, a hand count or an exact
sympy computation, never taken from a value the code under test computes.
"""

import dataclasses
import itertools

import numpy as np
import pytest
import sympy as sp
import torch

from conslaw import catalog
from conslaw.count import count
from conslaw.errors import ConslawError
from conslaw.fields import FieldSource, ReparamFields, RestrictedFields, gaussian_inputs
from conslaw.laws import QuadraticLaw, balance_law, law_residual, unit_slot
from conslaw.lie import bracket_value, lie_trace_dimension, sample_brackets
from conslaw.params import ParamSpace
from conslaw.rank import RankResult, check_rtol, numerical_rank, rank_from_singular_values, sparse_rank


def exact_linear_law_rank(widths, point):
    """Exact rank at ``point`` of the gradients of the entries (k <= l) of W_l W_l^T - W_{l+1}^T W_{l+1}.

    Built from the paper's formulas in sympy, independently of the catalog; widths input first.
    """
    mats, symbols = [], []
    for layer in range(1, len(widths)):
        names = sp.symbols(f"w{layer}_0:{widths[layer] * widths[layer - 1]}")
        symbols += names
        mats.append(sp.Matrix(widths[layer], widths[layer - 1], names))
    laws = []
    for a, b in itertools.pairwise(mats):
        gram = a * a.T - b.T * b
        laws += [gram[k, j] for k in range(gram.rows) for j in range(k, gram.cols)]
    jac = sp.Matrix([[sp.diff(h, x) for x in symbols] for h in laws])
    return len(laws), jac.subs(dict(zip(symbols, point, strict=True))).rank()


def rational_point(n):
    return [sp.Rational((-1) ** k * (k + 2), 3 + k % 4) for k in range(n)]


# widths, closed forms (entries a <= b), independent ones, laws (D - dim Lie):
# [1, r, 1]: u_k u_l - v_k v_l are the entries of u u^T - v v^T, a symmetric matrix of rank <= 2 and
#   signature (1, 1): 2r - 1 independent functions; phi = v^T u is scalar, so W is spanned by ONE field
#   and dim Lie = 1: 2r - 1 laws;
# [2, 4, 1], [2, 5, 2]: r > n + m, the r(r+1)/2 entries of Z J Z^T (Z in R^{r x (n+m)}, J = diag(I_m, -I_n))
#   have rank r(n+m) - (n+m)(n+m-1)/2: 12 - 3 = 9 and 20 - 6 = 14;
# [1, 3, 1, 1]: the 6 entries of layer 1 have rank 5 as above; the layer-2 law |W2|^2 - W3^2 is the only
#   one touching W3: 6 of 7; phi is scalar again, D - 1 = 6 laws.
DEPENDENT = [((1, 3, 1), 6, 5, 5), ((1, 4, 1), 10, 7, 7), ((2, 4, 1), 10, 9, 9), ((2, 5, 2), 15, 14, 14),
             ((1, 3, 1, 1), 7, 6, 6)]


@pytest.mark.parametrize("widths, forms, independent, laws", DEPENDENT)
def test_dependent_closed_forms_are_counted_once(widths, forms, independent, laws):
    arch = catalog.linear(*widths)
    assert len(arch.law_set()) == forms
    res = count(arch)
    assert res.known_laws == independent and res.known_gap > 1e8  # the dependent form is dropped clearly
    assert res.num_laws == laws
    assert res.fields == "reparam" and res.derivative_check.worst_relative_error < 1e-4


@pytest.mark.parametrize("widths, forms, independent", [(w, f, i) for w, f, i, _ in DEPENDENT])
def test_dependent_closed_forms_rank_by_exact_sympy(widths, forms, independent):
    D = sum(a * b for a, b in itertools.pairwise(widths))
    assert exact_linear_law_rank(widths, rational_point(D)) == (forms, independent)


def test_dead_relu_neuron_law_has_zero_gradient_and_its_coordinates_are_all_conserved():
    # relu [2, 3, 2] with hidden neuron 1 at zero (incoming row and outgoing column): its law
    # |u_1|^2 - |v_1|^2 has gradient 0 (2 independent closed forms of 3); the fields and all their
    # brackets vanish on its 4 coordinates (they only move with u_1 or v_1), so each of them is
    # conserved: 4 + the 2 laws of the live neurons = 6 laws.
    arch = catalog.relu(2, 3, 2)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    params = arch.space.unflatten(theta)
    params["W1"][1] = 0.0
    params["W2"][:, 1] = 0.0
    theta = arch.space.flatten(params)
    for fields in ("reparam", "model"):
        res = count(arch, theta=theta, fields=fields)
        assert len(arch.law_set()) == 3
        assert res.known_laws == 2
        assert res.num_laws == 6


# --- rank.py: the one rank rule -------------------------------------------------------------------


def test_law_rank_is_relative_to_each_law_not_to_the_largest():
    # relu [2, 3, 2]: neuron 0 scaled by 1e-7, neuron 2 by 1e3. The three laws touch disjoint
    # parameters and none has a zero gradient: 3 independent laws, although their gradients'
    # norms differ by 1e10 (more than 1 / rtol).
    arch = catalog.relu(2, 3, 2)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    params = arch.space.unflatten(theta)
    params["W1"][0] *= 1e-7
    params["W2"][:, 0] *= 1e-7
    params["W1"][2] *= 1e3
    params["W2"][:, 2] *= 1e3
    theta = arch.space.flatten(params)
    norms = arch.law_set().gradients(theta).norm(dim=1)
    assert norms.min() / norms.max() < 1e-9
    assert arch.law_set().rank(theta).rank == 3


def test_numerical_rank_normalizes_rows_of_any_size():
    # (1, 1) and (1e-12, 0) are independent: rank 2 whatever their lengths
    for small in (1e-12, 1e-4):
        rows = torch.tensor([[1e6, 1e6], [small, 0.0]])
        assert numerical_rank(rows).rank == 2
    assert numerical_rank(torch.tensor([[1e6, 1e6], [1e-12, 0.0]]), normalize=False).rank == 1


def test_numerical_rank_of_one_by_one_and_empty():
    assert numerical_rank(torch.tensor([[2.0]])).rank == 1
    assert numerical_rank(torch.tensor([[0.0]])).rank == 0
    assert numerical_rank(torch.zeros(0, 3)).rank == 0
    # one class, one input: W is 1 x 1 and its column sum is one law (Prop 3.11: M = 1)
    assert count(catalog.softmax(1, 1)).known_laws == 1


def test_default_threshold_is_one_in_1e8():
    # normalized rows (1, 0), (1, eps): second singular value ~ eps / sqrt 2 against a threshold of
    # 1e-8 * sqrt 2: kept for eps = 3e-8, dropped for eps = 5e-9
    assert numerical_rank(torch.tensor([[1.0, 0.0], [1.0, 3e-8]])).rank == 2
    assert numerical_rank(torch.tensor([[1.0, 0.0], [1.0, 5e-9]])).rank == 1


def test_numerical_rank_uses_the_given_threshold():
    rows = torch.tensor([[1.0, 0.0], [1.0, 1e-5]])  # second singular value ~ 7e-6 of the first
    assert numerical_rank(rows).rank == 2
    assert numerical_rank(rows, rtol=1e-3).rank == 1
    assert sparse_rank([(torch.tensor([0, 1]), rows[0]), (torch.tensor([0, 1]), rows[1])], 2, rtol=1e-3) == 1


def test_rank_from_singular_values_threshold_and_gap():
    sv = torch.tensor([4.0, 2.0, 1e-9, 0.0])
    res = rank_from_singular_values(sv, 1e-8)
    assert (res.rank, res.smallest_kept, res.largest_dropped) == (2, 2.0, 1e-9)
    assert res.gap == pytest.approx(2e9)
    assert rank_from_singular_values(sv, 1e-8, reference=1e-3).rank == 3  # threshold 1e-11
    assert rank_from_singular_values(sv, 0.4).rank == 2  # 2.0 > 1.6
    assert rank_from_singular_values(sv, 0.6).rank == 1  # 2.0 < 2.4
    assert rank_from_singular_values(torch.tensor([4.0, 2.0]), 1e-8).largest_dropped is None
    assert rank_from_singular_values(torch.tensor([1.0, 1e-8]), 1e-8).rank == 1  # strictly above rtol * reference
    nothing = rank_from_singular_values(torch.tensor([1e-12]), 1e-8, reference=1.0)
    assert (nothing.rank, nothing.smallest_kept, nothing.largest_dropped) == (0, None, 1e-12)
    for zeros in (torch.zeros(3), np.zeros(1)):
        res = rank_from_singular_values(zeros, 1e-8)
        assert (res.rank, res.smallest_kept, res.gap) == (0, None, None)
    assert rank_from_singular_values(torch.zeros(0), 1e-8) == RankResult(0, None, None)


@pytest.mark.parametrize("rtol", [0.0, 1.0, 2.0, -1e-8, "1e-8"])
def test_bad_rtol_is_refused_with_the_fix(rtol):
    with pytest.raises(ConslawError, match=r"rtol must be a number in \(0, 1\).*fix: use the default"):
        check_rtol(rtol)


def test_sparse_rank_sums_the_ranks_of_the_groups():
    def row(support, values):
        return torch.tensor(support), torch.tensor(values, dtype=torch.float64)

    rows = [
        row([0, 1], [1.0, 2.0]), row([1, 0], [-4.0, -2.0]),        # the same direction twice: 1
        row([2, 3, 4], [1.0, 0.0, 1.0]), row([3, 4], [1.0, 1.0]),  # independent: 2
        row([5], [0.0]),                                           # a zero gradient: 0
        row([6], [3.0]),                                           # alone: 1
        row([7, 8], [1e6, 1e6]), row([7], [1e-10]),                # independent, scales 1e16 apart: 2
    ]
    assert sparse_rank(rows, 9) == 6
    assert sparse_rank([], 9) == 0
    assert sparse_rank(rows[:2], 9) == 1 and sparse_rank(rows[4:5], 9) == 0


@pytest.mark.parametrize("widths, independent", [((1, 3, 1), 5), ((2, 5, 2), 14), ((1, 3, 1, 1), 6)])
def test_sparse_rank_of_dependent_closed_forms(widths, independent):
    arch = catalog.linear(*widths)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(1))
    assert sparse_rank([law.sparse_grad(theta) for law in arch.law_set()], arch.space.D) == independent


# --- lie.py: the engine ----------------------------------------------------------------------------


class ConstantFields(FieldSource):
    """chi_c = sum_i c_i v_i for fixed vectors v_i: all brackets vanish, the Lie algebra is span{v_i}."""

    def __init__(self, vectors):
        self.vectors = torch.as_tensor(vectors, dtype=torch.float64)
        self.space = ParamSpace({"theta": (self.vectors.shape[1],)})

    def sample(self, n, generator):
        return torch.randn(n, self.vectors.shape[0], generator=generator, dtype=torch.float64)

    def field(self, theta, c):
        return c @ self.vectors + 0 * theta


def test_engine_draws_d_minus_rank_plus_margin_brackets_per_level():
    # linear [2, 4, 3] (D = 20, reparam fields): level 1 adds rank dphi = 6, level 2 adds 4, level 3
    # nothing: 20 + 8, 14 + 8, 10 + 8 brackets (DESIGN.md: D - current rank + margin per level)
    arch = catalog.linear(2, 4, 3)
    res = lie_trace_dimension(arch.fields(), arch.space.sample(generator=torch.Generator().manual_seed(0)))
    assert [(lv.level, lv.samples, lv.added, lv.rank) for lv in res.levels] == [(1, 28, 6, 6), (2, 22, 4, 10),
                                                                                (3, 18, 0, 10)]
    assert res.saturated and res.num_laws == 10 and res.warnings == []
    assert res.smallest_kept > 1e-3 and res.largest_dropped < 1e-12
    # model fields oversample by a quarter of the missing dimensions: + int(0.25 (D - rank))
    model = lie_trace_dimension(arch.fields("model"), arch.space.sample(generator=torch.Generator().manual_seed(0)))
    assert [(lv.samples, lv.added) for lv in model.levels] == [(28 + 5, 6), (22 + 3, 4), (18 + 2, 0)]


def test_engine_count_does_not_depend_on_chunks_and_batches():
    # max_chunk < D forces several chunks per level, batch = 3 several vmap batches per chunk
    arch = catalog.linear(2, 4, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    res = lie_trace_dimension(arch.fields(), theta, max_chunk=9, batch=3)
    assert res.num_laws == 10 and res.dim == 10 and res.saturated
    assert [lv.added for lv in res.levels] == [6, 4, 0]
    att = catalog.attention(3, 2, 2)
    theta = att.space.sample(generator=torch.Generator().manual_seed(0))
    assert lie_trace_dimension(att.fields(), theta, max_chunk=9, batch=2).num_laws == 6  # d1 (d1 + 1)


def test_stopping_at_max_level_says_the_count_is_an_upper_bound():
    # level 1 alone: D - rank dphi = 20 - 6 = 14 >= the 10 laws of linear [2, 4, 3]
    arch = catalog.linear(2, 4, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    res = lie_trace_dimension(arch.fields(), theta, max_level=1)
    assert res.num_laws == 14 and not res.saturated
    assert any("max_level=1" in w and "upper bound" in w for w in res.warnings)
    # relu [3, 4, 2]: W itself is a Lie algebra there, level 1 reaches it, level 2 confirms
    relu = catalog.relu(3, 4, 2)
    res = lie_trace_dimension(relu.fields(), relu.space.sample(generator=torch.Generator().manual_seed(0)), max_level=2)
    assert res.num_laws == 4 and res.saturated and res.warnings == []


def test_engine_reaches_full_rank_and_stops():
    # three generic constant fields in R^3 span everything: no law, no level 2
    res = lie_trace_dimension(ConstantFields([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0]]), torch.zeros(3))
    assert res.dim == 3 and res.num_laws == 0 and len(res.levels) == 1 and res.saturated is False
    assert res.warnings == [] and res.largest_dropped is None


def test_engine_with_zero_fields_finds_every_coordinate_conserved():
    res = lie_trace_dimension(ConstantFields([[0.0, 0.0, 0.0]]), torch.zeros(3))
    assert res.dim == 0 and res.num_laws == 3 and res.saturated is True
    assert res.smallest_kept is None and res.spectral_gap is None and res.basis.shape == (0, 3)
    one = lie_trace_dimension(ConstantFields([[1.0, 2.0, 0.0]]), torch.zeros(3))
    assert one.dim == 1 and one.num_laws == 2 and one.warnings == []
    assert one.smallest_kept > 0.5 and one.spectral_gap > 1e10


def test_a_level_wider_than_a_chunk_is_drawn_in_several_chunks():
    # 12 independent constant fields in R^14 with chunks of 9 samples: level 1 needs two chunks to find
    # the 12 directions (and a third to see nothing new); no bracket: 14 - 12 = 2 laws
    vectors = torch.eye(14)[:12] + 2.0 * torch.eye(14).roll(1, dims=1)[:12]  # rows e_k + 2 e_{k+1}
    res = lie_trace_dimension(ConstantFields(vectors), torch.zeros(14), max_chunk=9, batch=4)
    assert res.dim == 12 and res.num_laws == 2 and [lv.added for lv in res.levels] == [12, 0]


def test_small_spectral_gap_is_a_warning():
    # v3 differs from v1 by 1e-10 (dropped) and v2 by 3e-9 (kept): rank 2, gap ~ 300 < GAP_WARNING
    vectors = [[1.0, 0.0, 0.0], [1.0, 3e-9, 0.0], [1.0, 0.0, 1e-10]]
    res = lie_trace_dimension(ConstantFields(vectors), torch.zeros(3))
    assert res.dim == 2 and res.num_laws == 1 and res.saturated
    assert 10 < res.spectral_gap < 1e3
    assert any("small spectral gap" in w for w in res.warnings)
    # v2 at 3e-8 instead: gap ~ 3.6e3, above GAP_WARNING = 1e3, no warning
    above = lie_trace_dimension(ConstantFields([[1.0, 0.0, 0.0], [1.0, 3e-8, 0.0], [1.0, 0.0, 1e-10]]), torch.zeros(3))
    assert above.dim == 2 and 1e3 < above.spectral_gap < 1e4 and above.warnings == []
    clear = lie_trace_dimension(ConstantFields([[1.0, 0.0, 0.0], [1.0, 1e-3, 0.0]]), torch.zeros(3))
    assert clear.dim == 2 and clear.warnings == []


@pytest.mark.parametrize("margin", [0, -1])
def test_margin_below_one_is_refused(margin):
    arch = catalog.linear(1, 1, 1)
    with pytest.raises(ConslawError, match=f"margin must be >= 1, got {margin}; fix: use the default margin=8"):
        lie_trace_dimension(arch.fields(), torch.ones(2), margin=margin)


def test_chunks_no_larger_than_the_margin_are_refused():
    # a chunk of n <= margin samples can never show that a level is exhausted (new <= n - margin): the
    # engine looped for ever on a saturated level before this check
    arch = catalog.attention(3, 2, 2)
    with pytest.raises(ConslawError, match="max_chunk must be larger than margin"):
        lie_trace_dimension(arch.fields(), arch.space.sample(generator=torch.Generator().manual_seed(0)), max_chunk=8)


def test_margin_one_still_counts_right():
    arch = catalog.linear(2, 4, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    assert lie_trace_dimension(arch.fields(), theta, margin=1).num_laws == 10


class QuadraticFields2D(FieldSource):
    """chi_c(theta) = c_0 (theta_2, 0) + c_1 (0, theta_1)."""

    space = ParamSpace({"theta": (2,)})

    def sample(self, n, generator):
        return torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def field(self, theta, c):
        return c[0] * torch.stack([theta[1], 0 * theta[0]]) + c[1] * torch.stack([0 * theta[1], theta[0]])


def test_bracket_value_scale_is_the_size_of_the_cancelling_terms():
    # X(theta) = (theta_2, 0), Y(theta) = (0, theta_1): [X, Y] = DY X - DX Y = (-theta_1, theta_2)
    source = QuadraticFields2D()
    theta = torch.tensor([3.0, 4.0])
    value, scale = bracket_value(source, theta, (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])))
    torch.testing.assert_close(value, torch.tensor([-3.0, 4.0]))
    assert scale.item() == pytest.approx(4.0 + 3.0)  # |DY X| = |(0, theta_2)|, |DX Y| = |(theta_1, 0)|
    single, single_scale = bracket_value(source, theta, (torch.tensor([1.0, 0.0]),))
    torch.testing.assert_close(single, torch.tensor([4.0, 0.0]))
    assert single_scale.item() == pytest.approx(4.0)


def test_brackets_do_not_depend_on_the_batch_size():
    arch = catalog.attention(3, 2, 2)
    source = arch.fields("model")
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    whole = sample_brackets(source, theta, 2, 7, torch.Generator().manual_seed(1), batch=256)
    pieces = sample_brackets(source, theta, 2, 7, torch.Generator().manual_seed(1), batch=3)
    assert whole.shape == pieces.shape == (7, arch.space.D)
    torch.testing.assert_close(whole, pieces, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scale", [1e-9, 1e6])
def test_count_does_not_depend_on_the_scale_of_theta(scale):
    # linear [2, 4, 3]: the fields are linear in theta, so is every bracket: the count is scale invariant
    arch = catalog.linear(2, 4, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0)) * scale
    res = lie_trace_dimension(arch.fields(), theta)
    assert res.num_laws == 10 and [lv.added for lv in res.levels] == [6, 4, 0]


# --- count.py --------------------------------------------------------------------------------------


def test_count_with_no_closed_forms_reports_none():
    arch = catalog.linear(2, 2, 2)
    res = count(arch, flow="sign")  # App R: no sign-flow laws in the catalog for U V^T
    assert res.known_laws is None and res.max_law_residual is None and res.num_laws == 0
    empty = count(dataclasses.replace(arch, laws=[]))
    assert empty.known_laws == 0 and empty.max_law_residual is None and empty.num_laws == 3


def test_count_rtol_reaches_both_ranks():
    # phi(theta) = (theta_1, theta_2): constant fields e1, e2, no bracket, dim Lie = 2. The closed forms
    # theta_3 and theta_3 + 1e-5 theta_2 (the second only nearly conserved): normalized gradients whose
    # second singular value is ~7e-6: 2 independent at the default rtol = 1e-8, 1 at rtol = 1e-3.
    space = ParamSpace({"theta": (3,)})
    laws = [QuadraticLaw.build("theta_3", "theta[2]", ("theta",), lin=[(2, 1.0)]),
            QuadraticLaw.build("near", "theta[2] + 1e-5 theta[1]", ("theta",), lin=[(2, 1.0), (1, 1e-5)])]
    arch = catalog.Architecture(name="test", label="A theta", config={}, space=space, model=None, input_shape=None,
                                laws=laws, phi=lambda p: p["theta"][:2])
    default = count(arch)
    assert (default.lie.dim, default.num_laws, default.known_laws) == (2, 1, 2)
    coarse = count(arch, rtol=1e-3)
    assert (coarse.lie.dim, coarse.num_laws, coarse.known_laws) == (2, 1, 1)
    with pytest.raises(ConslawError, match="rtol must be"):
        count(arch, rtol=2.0)  # the engine checks the rtol it is given


# --- fields ----------------------------------------------------------------------------------------


def test_gaussian_inputs_are_a_scale_mixture_with_log_scales_in_minus_three_three():
    x = gaussian_inputs(64, (3, 2), torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 3, 2, generator=gen, dtype=torch.float64)
    u = torch.rand(64, generator=gen, dtype=torch.float64) * 6.0 - 3.0
    torch.testing.assert_close(x, z * torch.exp(u)[:, None, None], rtol=1e-14, atol=0)
    plain = gaussian_inputs(64, (3, 2), torch.Generator().manual_seed(0), multiscale=False)
    torch.testing.assert_close(plain, z, rtol=0, atol=0)


def test_a_block_that_is_the_whole_network_has_the_network_count():
    # resnet M = 3, R = 2, one block: restricting to every parameter changes nothing (R = 2 laws)
    arch = catalog.resnet(3, 2, 1)
    res = count(arch, block=["V1", "U1"])
    assert res.num_laws == res.known_laws == 2 and res.block == ["V1", "U1"]


def test_restricted_law_values_are_the_laws_at_the_full_theta():
    arch = catalog.resnet(3, 2, 3)
    source = RestrictedFields(arch.fields(), ["V2", "U2"])
    eta = source.sample_rest(torch.Generator().manual_seed(1))
    theta_t = source.space.sample(generator=torch.Generator().manual_seed(2))
    restricted = arch.law_set().restrict(source, eta)
    assert len(restricted) == 2  # the two neurons of block 2; no law of blocks 1 and 3
    full = source.full_theta(theta_t, eta)
    block_laws = [law for law in arch.law_set() if set(law.params) <= {"V2", "U2"}]
    for law, original in zip(restricted, block_laws, strict=True):
        torch.testing.assert_close(law.value(theta_t), original.value(full))
        torch.testing.assert_close(law.grad(theta_t), original.grad(full)[source.block_index])
        assert (law.name, law.origin, law.family, law.module, law.unit) == \
            (original.name, "closed-form", original.family, original.module, original.unit)
    assert [law.unit for law in restricted] == [(0,), (1,)]


def test_field_source_errors_name_the_problem_and_the_fix():
    space = ParamSpace({"theta": (2,)})
    with pytest.raises(ConslawError, match="got neither phi nor pairing; fix: pass phi"):
        ReparamFields(space)
    with pytest.raises(ConslawError, match="without sample_coefficients; fix: pass sample_coefficients"):
        ReparamFields(space, pairing=lambda p, c: p["theta"].sum())
    with pytest.raises(ConslawError, match=r"block \['V9'\] names parameters \['V9'\] that do not exist; fix"):
        RestrictedFields(catalog.resnet(2, 2, 2).fields(), ["V9"])


# --- laws ------------------------------------------------------------------------------------------


def test_residual_against_a_single_field_and_of_a_unit_gradient():
    # theta_1 under the single constant field e1 + e2: <e1, e1 + e2> / (|e1| |(e1 + e2) on {theta_1}|) = 1
    coordinate = QuadraticLaw.build("theta_1", "theta[0]", ("theta",), lin=[(0, 1.0)])
    fields = torch.tensor([[1.0, 1.0, 0.0]])
    assert law_residual(coordinate, fields, torch.zeros(3)) == pytest.approx(1.0)
    assert law_residual(coordinate, torch.zeros(0, 3), torch.zeros(3)) == 0.0
    # theta_1 + theta_2: orthogonal to (1, -1, 0), not to (1e-3, 0, 0): cos = 1e-3 / (sqrt 2 * 1e-3), each field
    # measured on its own share of the support
    pair = QuadraticLaw.build("sum", "theta[0] + theta[1]", ("theta",), lin=[(0, 1.0), (1, 1.0)])
    two = torch.tensor([[1.0, -1.0, 0.0], [1e-3, 0.0, 0.0]])
    assert law_residual(pair, two, torch.zeros(3)) == pytest.approx(2 ** -0.5)
    conserved = QuadraticLaw.build("theta_3", "theta[2]", ("theta",), lin=[(2, 1.0)])
    assert law_residual(conserved, fields, torch.zeros(3)) == 0.0  # the field's share on theta_3 is floored
    # a field whose share on the support is 1e-6 of it is measured against 1e-4 of its norm (the floor)
    assert law_residual(conserved, torch.tensor([[1.0, 0.0, 1e-6]]), torch.zeros(3)) == pytest.approx(1e-2, rel=1e-6)


def test_unit_slot_with_explicit_columns():
    space = ParamSpace({"W": (2, 4)})
    gaps = unit_slot(space, "W", 1, 0, cols=[0, 2])
    assert gaps.text == "W[:,0,2]" and gaps.units == (0, 2) and gaps.axis == 1
    assert gaps.index.tolist() == [0, 2, 4, 6]
    run = unit_slot(space, "W", 1, 0, cols=[1, 2, 3])
    assert run.text == "W[:,1:4]" and run.units == (1, 2, 3)
    assert run.index.tolist() == [1, 2, 3, 5, 6, 7]
    pair = unit_slot(space, "W", 1, 0, cols=[2, 3])
    assert pair.text == "W[:,2:4]" and pair.units == (2, 3)
    block = unit_slot(space, "W", 1, slice(1, 3))
    assert block.text == "W[:,1:3]" and block.units == (1, 2) and block.index.tolist() == [1, 2, 5, 6]


def test_balance_law_declares_its_signed_slots():
    space = ParamSpace({"U": (2, 3), "V": (3, 2)})
    plus, minus = unit_slot(space, "U", 1, 1), unit_slot(space, "V", 0, 1)
    law = balance_law("neuron 1", [plus], [minus])
    assert law.norm_terms == ((1.0, plus), (-1.0, minus))
    assert law.formula == "|U[:,1]|^2 - |V[1,:]|^2"


def test_gram_law_formulas_name_inner_products_and_squared_norms():
    laws = {law.unit: law for law in catalog.linear(2, 2, 2).law_set()}
    assert laws[(0, 0)].formula == "|W1[0,:]|^2 - |W2[:,0]|^2"
    assert laws[(0, 1)].formula == "<W1[0,:], W1[1,:]> - <W2[:,0], W2[:,1]>"
    assert {law.origin for law in laws.values()} == {"closed-form"}


def test_engine_result_carries_its_seed():
    res = lie_trace_dimension(ConstantFields([[1.0, 0.0]]), torch.zeros(2), seed=5)
    assert res.seed == 5 and res.num_laws == 1


@pytest.fixture
def float32_default():
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(torch.float64)


@pytest.mark.parametrize("make, options, laws", [
    (lambda: catalog.linear(2, 4, 3), {}, 10),                              # r(r+1)/2, r = 4
    (lambda: catalog.linear(2, 4, 3), {"fields": "model"}, 10),             # the same with sampled inputs
    (lambda: catalog.relu(2, 3, 2, bias=True), {"fields": "model"}, 3),     # one per hidden neuron
    (lambda: catalog.resnet(3, 2, 3), {"block": ["V2", "U2"]}, 2),          # Thm 4.6: R
    (lambda: catalog.softmax(3, 4), {}, 4),                                 # Prop 3.11: M
])
def test_counts_run_in_float64_whatever_the_default_dtype(float32_default, make, options, laws):
    # DESIGN.md: all counting in float64. The library must not rely on the caller's default dtype
    # (the test suite's conftest sets float64, which would hide a tensor created without a dtype).
    res = count(make(), **options)
    assert res.num_laws == res.known_laws == laws and res.lie.basis.dtype == torch.float64
    assert gaussian_inputs(2, (3,), torch.Generator().manual_seed(0)).dtype == torch.float64
    law = QuadraticLaw.build("mixed", "theta[0] theta[1] + 2 theta[2]", ("theta",), quad=[(0, 1, 1.0)], lin=[(2, 2.0)])
    assert law.grad(torch.ones(3, dtype=torch.float64)).dtype == torch.float64


def test_sparse_gradient_of_a_law_with_quadratic_and_linear_terms():
    # h = theta_0 theta_1 + 2 theta_2 - theta_3^2: gradient (theta_1, theta_0, 2, -2 theta_3)
    law = QuadraticLaw.build("mixed", "...", ("theta",), quad=[(0, 1, 1.0), (3, 3, -1.0)], lin=[(2, 2.0)])
    theta = torch.tensor([3.0, 5.0, 7.0, 11.0, 13.0])
    support, values = law.sparse_grad(theta)
    assert support.tolist() == [0, 1, 2, 3] and values.tolist() == [5.0, 3.0, 2.0, -22.0]
    assert law.grad(theta).tolist() == [5.0, 3.0, 2.0, -22.0, 0.0]


def test_translation_laws_declare_their_structure():
    laws = catalog.softmax(3, 4).law_set()
    assert [(law.family, law.module, law.unit) for law in laws] == [("translation", "softmax", (j,)) for j in range(4)]


def test_block_counts_are_reproducible_from_the_seed():
    a = count(catalog.resnet(3, 2, 3), block=["V2", "U2"], seed=3)
    b = count(catalog.resnet(3, 2, 3), block=["V2", "U2"], seed=3)
    assert a.num_laws == b.num_laws == 2 and torch.equal(a.lie.basis, b.lie.basis)
