"""The engine's linear algebra and thread policy (issue 13): one-pass projection with a selective second
pass, and intra-op threads chosen from the op size and the machine's load, the caller's setting restored."""

import numpy as np
import pytest
import torch

import conslaw.lie as lie_module
from conslaw import catalog
from conslaw.count import count
from conslaw.errors import ConslawError
from conslaw.laws.builders import balance_law
from conslaw.laws.slots import Slot
from conslaw.lie import lie_trace_dimension
from conslaw.rank import GroupTooLarge, sparse_rank
from conslaw.threads import SMALL_D, engine_threads, free_cores, policy_threads
from test_mutation_kills import ConstantFields


def _nearly_dependent_fields() -> tuple[ConstantFields, int]:
    # 60 vectors in R^200: random combinations of 5 directions plus independent parts 1e-5 their size,
    # so most kept directions come from singular values ~1e-6 (residual / s carries eps / s along the basis)
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, 200, generator=g, dtype=torch.float64)
    vectors = torch.randn(60, 5, generator=g, dtype=torch.float64) @ base
    vectors = vectors + 1e-5 * torch.randn(60, 200, generator=g, dtype=torch.float64)
    return ConstantFields(vectors), 200


def test_basis_stays_orthonormal_and_rank_exact_with_near_threshold_directions():
    fields, D = _nearly_dependent_fields()
    res = lie_trace_dimension(fields, torch.zeros(D), max_chunk=20, batch=7)
    gram = res.basis @ res.basis.T
    assert res.dim == 60 and res.num_laws == 140
    assert (gram - torch.eye(60, dtype=gram.dtype)).abs().max() < 1e-13
    assert res.spectral_gap > 1e4


def test_without_the_second_pass_the_basis_breaks(monkeypatch):
    # the selective re-orthogonalization is what keeps the count right: switched off, spurious directions
    # appear (62 > 60 on this case) and the basis is far from orthonormal
    monkeypatch.setattr(lie_module, "REORTHOGONALIZE_BELOW", 0.0)
    fields, D = _nearly_dependent_fields()
    res = lie_trace_dimension(fields, torch.zeros(D), max_chunk=20, batch=7)
    gram = res.basis @ res.basis.T
    assert res.dim > 60 or (gram - torch.eye(res.dim, dtype=gram.dtype)).abs().max() > 1e-6


@pytest.mark.parametrize("reserved", [True, False])
def test_basis_buffer_keeps_every_direction(monkeypatch, reserved):
    # D = 60, chunks of 9: the D x D buffer reserved once, or (reservation refused) 9 rows doubled as needed;
    # either way the basis is the span of the fields
    if not reserved:
        empty, refused = torch.empty, []

        def refuse_square(*shape, **kwargs):
            if tuple(shape) == (60, 60) and not refused:
                refused.append(shape)
                raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")
            return empty(*shape, **kwargs)

        monkeypatch.setattr(lie_module.torch, "empty", refuse_square)
    g = torch.Generator().manual_seed(2)
    vectors = torch.randn(45, 60, generator=g, dtype=torch.float64)
    res = lie_trace_dimension(ConstantFields(vectors), torch.zeros(60), max_chunk=9, batch=4)
    assert reserved or refused  # the fallback path did run
    assert res.dim == 45 and res.basis.shape == (45, 60)
    # every field vector lies in the span found: residual after projection at round-off
    residual = vectors - (vectors @ res.basis.T) @ res.basis
    assert residual.abs().max() < 1e-12 * vectors.abs().max()


def test_policy_one_thread_for_small_ops(monkeypatch):
    monkeypatch.delenv("CONSLAW_THREADS", raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    assert policy_threads(SMALL_D - 1) == 1
    assert policy_threads(SMALL_D) == min(torch.get_num_threads(), free_cores())


@pytest.mark.parametrize(("load", "cores", "free"), [(0.0, 8, 8), (1.0, 8, 8), (3.0, 8, 6), (9.0, 8, 1),
                                                     (2.0, 2, 1), (1.2, 2, 2), (40.0, 2, 1)])
def test_free_cores_discounts_other_processes(monkeypatch, load, cores, free):
    # this process counts for one unit of load; at least one core is always granted
    monkeypatch.setattr("os.getloadavg", lambda: (load, load, load))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert free_cores() == free


def test_busy_machine_caps_large_ops_at_free_cores(monkeypatch):
    monkeypatch.delenv("CONSLAW_THREADS", raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert policy_threads(10 * SMALL_D) == 1


def test_override_by_argument_and_environment(monkeypatch):
    monkeypatch.setenv("CONSLAW_THREADS", "3")
    assert policy_threads(10) == 3 and policy_threads(10**6) == 3
    assert policy_threads(10, threads=2) == 2  # the argument wins
    monkeypatch.setenv("CONSLAW_THREADS", "many")
    with pytest.raises(ConslawError, match="CONSLAW_THREADS must be a positive integer, got 'many'"):
        policy_threads(10)
    monkeypatch.delenv("CONSLAW_THREADS")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConslawError, match="threads must be a positive integer"):
            policy_threads(10, threads=bad)


def test_engine_threads_restores_the_callers_setting_even_on_error():
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    with engine_threads(10, threads=target) as used:
        assert used == target and torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(ZeroDivisionError), engine_threads(10, threads=target):
        1 / 0  # noqa: B018
    assert torch.get_num_threads() == before


def test_counts_do_not_depend_on_threads():
    # linear [4, 5, 3]: r (r + 1) / 2 = 15 laws with any thread count; the caller's setting is untouched
    arch = catalog.linear(4, 5, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    one = lie_trace_dimension(arch.fields(), theta, threads=1)
    two = lie_trace_dimension(arch.fields(), theta, threads=2)
    assert one.num_laws == two.num_laws == 15 and torch.get_num_threads() == before
    assert torch.allclose(one.basis.T @ one.basis, two.basis.T @ two.basis, atol=1e-12)  # same span


def test_count_warns_when_a_catalog_law_is_not_orthogonal_to_the_fields():
    # linear [2, 3, 2]: add |W1|^2 (not conserved: gradient flow changes it) to the closed forms; the count
    # must still be the engine's r (r + 1) / 2 = 6 and say that a catalog law breaks
    arch = catalog.linear(2, 3, 2)
    good = count(arch)
    assert good.num_laws == good.known_laws == 6 and not any("not orthogonal" in w for w in good.warnings)
    name = arch.space.names[0]
    bogus = balance_law("|W1|^2", [Slot(name, arch.space.indices(name).reshape(-1), name)], [])
    arch.laws = [*arch.closed_forms(), bogus]
    bad = count(arch)
    assert bad.num_laws == 6 and bad.max_law_residual > 1e-3
    assert any("a catalog law is not orthogonal to the fields" in w for w in bad.warnings)


def _sparse_rows(dense: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rows = []
    for row in dense:
        support = np.flatnonzero(row)
        rows.append((torch.as_tensor(support), torch.as_tensor(row[support])))
    return rows


def test_sparse_rank_of_wide_groups_equals_the_dense_rank():
    # 300 columns: 40 rows with disjoint supports (translation-like), 12 rows across them (rescaling-like),
    # 3 of the 12 replaced by combinations of others (one of disjoint rows only): rank 40 + 12 - 3 = 49
    rng = np.random.default_rng(0)
    disjoint = np.zeros((40, 300))
    for k in range(40):
        disjoint[k, 7 * k:7 * k + 5] = rng.standard_normal(5)
    wide = rng.standard_normal((12, 300)) * (rng.random((12, 300)) < 0.3)
    wide[9] = disjoint[3] - 2 * disjoint[17] + 0.5 * disjoint[30]
    wide[10] = wide[0] + disjoint[5]
    wide[11] = 3 * wide[1] - wide[2]
    dense = np.vstack([disjoint, wide])
    assert np.linalg.matrix_rank(dense) == 49
    rows = _sparse_rows(dense)
    assert sparse_rank(rows, 300) == 49  # one dense block
    assert sparse_rank(rows, 300, max_dense_bytes=1) == 49  # disjoint rows taken out, the rest sketched


def test_sparse_rank_sketch_keeps_the_rank_threshold():
    # a rest block whose 6th row is another row + 1e-12 noise (dependent at rtol 1e-8) and whose 5th row is a
    # row + 1e-5 perturbation (independent): the sketch must decide both as the SVD of the rows does
    rng = np.random.default_rng(1)
    rest = rng.standard_normal((6, 2000))
    rest[4] = rest[0] + 1e-5 * rng.standard_normal(2000)
    rest[5] = rest[1] + 1e-12 * rng.standard_normal(2000)
    assert sparse_rank(_sparse_rows(rest), 2000) == 5
    assert sparse_rank(_sparse_rows(rest), 2000, max_dense_bytes=1) == 5


def test_sparse_rank_refuses_a_rest_too_large_to_sketch_or_to_project(monkeypatch):
    import conslaw.rank as rank_module

    rows = _sparse_rows(np.random.default_rng(2).standard_normal((5, 50)))
    monkeypatch.setattr(rank_module, "MAX_SKETCH_ROWS", 3)
    with pytest.raises(GroupTooLarge, match="4 rows sharing coordinates after removing 1 disjoint"):
        sparse_rank(rows, 50, max_dense_bytes=1)
    # the projection's size is bounded before it is formed: 4 rows each meeting the 50-entry disjoint row
    monkeypatch.setattr(rank_module, "MAX_SKETCH_ROWS", 2048)
    monkeypatch.setattr(rank_module, "MAX_PROJECTION_BYTES", 24 * 399)
    with pytest.raises(GroupTooLarge, match="4 rows whose projection would hold 400 entries"):
        sparse_rank(rows, 50, max_dense_bytes=1)
    monkeypatch.setattr(rank_module, "MAX_PROJECTION_BYTES", 24 * 400)
    assert sparse_rank(rows, 50, max_dense_bytes=1) == 5
