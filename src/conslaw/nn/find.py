"""find_laws(model): every conservation law of a real nn.Module, named, verified, counted.

1. trace the model (torch.fx, handlers for leaves such as attention);
2. match the law families of :mod:`conslaw.nn.patterns` and the handlers;
3. verify every law on the model itself (loss-gradient fields, float64):
   exact at round-off, approximate with a known cause, or failed;
4. count: ``named_laws`` = independent exact laws at theta (rank of their
   gradients, computed per group of laws that share coordinates), and for
   small models ``numeric_laws`` = D - dim Lie of the loss-gradient fields
   (Thm 2.11), so that unnamed laws show up as a difference;
5. list the parameters no law touches (``uncovered_params``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import ConslawError
from ..lie import lie_trace_dimension
from ..params import DTYPE
from .graph import trace
from .laws_nn import Findings, ModuleLaw
from .patterns import handwritten_attention_laws, normalization_laws, rescaling_laws, softmax_laws
from .registry import handler_for, leaf_types
from .verify import LossGradFields, analysis_copy

EXACT = 1e-10
APPROXIMATE = 1e-2
NUMERIC_MAX_D = 4000
#: above this many parameters, verify with 4 batches of 4 inputs (each is a float64 backward pass)
LARGE_D = 1_000_000


@dataclass
class ModelLaws:
    """The laws of a model, their verification, and the counts."""

    model_name: str
    D: int
    laws: list[ModuleLaw]
    named_laws: int
    numeric_laws: int | None
    uncovered_params: list[str]
    loss: str
    seconds: float
    numeric_seconds: float | None = None
    numeric_gap: float | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The JSON object of ``conslaw laws --json`` (DESIGN.md's CLI contract)."""
        return {
            "model": self.model_name, "D": self.D, "loss": self.loss,
            "laws": [law.as_dict() for law in self.laws],
            "families": self.family_table(),
            "uncovered_params": self.uncovered_params,
            "named_laws": self.named_laws, "numeric_laws": self.numeric_laws,
            "unnamed_laws": None if self.numeric_laws is None else self.numeric_laws - self.named_laws,
            "numeric_spectral_gap": self.numeric_gap, "seconds": self.seconds,
            "numeric_seconds": self.numeric_seconds, "warnings": self.warnings, "notes": self.notes,
        }

    def family_table(self) -> list[dict]:
        """One row per (family, module): count, verified/approximate/failed, worst residual."""
        rows: dict[tuple[str, str], dict] = {}
        for law in self.laws:
            row = rows.setdefault((law.family, law.module), {
                "family": law.family, "module": law.module, "formula": law.law.formula, "count": 0,
                "exact": 0, "approximate": 0, "failed": 0, "max_residual": 0.0})
            row["count"] += 1
            row[{"exact": "exact", "approximate": "approximate"}.get(law.status, "failed")] += 1
            row["max_residual"] = max(row["max_residual"], law.max_residual or 0.0)
        return list(rows.values())


def find_laws(model: nn.Module, example_input: torch.Tensor, loss: str = "mse", *, batches: int = 6,
              seed: int = 0, numeric: bool | None = None, name: str | None = None) -> ModelLaws:
    """Find, verify and count the conservation laws of ``model`` (see the module docstring).

    Attention runs with the math kernel of scaled_dot_product_attention: the
    fused CPU kernels have no forward-mode derivative, which the Lie brackets need.
    """
    with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        return _find_laws(model, example_input, loss, batches, seed, numeric, name)


def _find_laws(model, example_input, loss, batches, seed, numeric, name) -> ModelLaws:
    start = time.perf_counter()
    check_model(model, example_input)
    work = analysis_copy(model)
    example = example_input.to(DTYPE) if torch.is_floating_point(example_input) else example_input
    try:
        with torch.no_grad():
            work(example)
    except Exception as exc:
        raise ConslawError(f"the example input of shape {tuple(example_input.shape)} does not run through "
                           f"{type(model).__name__}: {type(exc).__name__}: {exc}".replace("\n", " "),
                           "pass an input of the shape the model expects, batch first") from exc
    big = sum(p.numel() for p in work.parameters()) > LARGE_D
    fields = LossGradFields(work, example, loss, batch=4 if big else 8)
    batches = min(batches, 4) if big else batches
    space = fields.space
    graph = trace(work, example, leaf_types())
    findings = Findings()
    for node in graph.nodes:
        module = graph.module_of(node)
        handler = handler_for(module) if module is not None else None
        if handler is not None:
            handler.laws(node.target, module, space, findings)
    unknown_modules(graph, findings)
    rescaling_laws(graph, space, findings)
    handwritten_attention_laws(graph, space, findings)
    normalization_laws(graph, space, findings)
    if loss == "cross_entropy":
        softmax_laws(graph, space, findings)
    theta = space.flatten(dict(work.named_parameters())).detach()
    verify(findings.laws, fields, theta, batches, seed)
    exact = [law for law in findings.laws if law.status == "exact"]
    named = independent_count(exact, theta, space.D)
    numeric_laws = numeric_seconds = gap = None
    if numeric or (numeric is None and space.D <= NUMERIC_MAX_D):
        t0 = time.perf_counter()
        lie = lie_trace_dimension(fields, theta, seed=seed)
        numeric_laws, numeric_seconds, gap = lie.num_laws, time.perf_counter() - t0, lie.spectral_gap
        findings.warnings += lie.warnings
    covered = {p for law in findings.laws if law.status in ("exact", "approximate") for p in law.law.params}
    uncovered = [p for p in space.names if p not in covered]
    for law in findings.laws:
        if law.status == "failed":
            findings.warnings.append(f"law {law.law.name!r} ({law.family}) failed verification: residual "
                                     f"{law.max_residual:.2e}")
    return ModelLaws(model_name=name or type(model).__name__, D=space.D, laws=findings.laws, named_laws=named,
                     numeric_laws=numeric_laws, uncovered_params=uncovered, loss=loss,
                     seconds=time.perf_counter() - start, numeric_seconds=numeric_seconds, numeric_gap=gap,
                     warnings=findings.warnings, notes=findings.notes)


KNOWN_PARAMETRIC = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                    nn.LayerNorm, nn.GroupNorm, nn.Embedding)


def unknown_modules(graph, findings: Findings) -> None:
    """Warn about leaf modules with parameters that no pattern or handler knows."""
    seen = set()
    for node in graph.nodes:
        module = graph.module_of(node)
        if module is None or node.target in seen or not any(True for _ in module.parameters(recurse=False)):
            continue
        seen.add(node.target)
        if not isinstance(module, KNOWN_PARAMETRIC) and handler_for(module) is None:
            findings.warnings.append(
                f"{node.target} ({type(module).__name__}) has no law handler: its parameters get no law of "
                "their own (register one with conslaw.nn.register_handler)")


def check_model(model: nn.Module, example_input) -> None:
    if not isinstance(model, nn.Module):
        raise ConslawError(f"expected an nn.Module, got {type(model).__name__}", "pass the model object")
    params = list(model.named_parameters())
    if not params:
        raise ConslawError(f"{type(model).__name__} has no parameters: there is nothing to conserve",
                           "pass a model with trainable parameters")
    bad = [n for n, p in params if not torch.is_floating_point(p)]
    if bad:
        raise ConslawError(f"parameters {bad} are not floating point", "gradient flow needs float parameters")
    if not isinstance(example_input, torch.Tensor):
        raise ConslawError(f"expected an example input tensor, got {type(example_input).__name__}",
                           "pass a batch of inputs, e.g. torch.randn(2, 3, 32, 32)")
    if example_input.dim() < 2 or example_input.shape[0] < 2:
        raise ConslawError(f"the example input needs a batch dimension of size >= 2, got shape "
                           f"{tuple(example_input.shape)}", "pass a batch of at least 2 inputs")


def verify(laws: list[ModuleLaw], fields: LossGradFields, theta: torch.Tensor, batches: int, seed: int) -> None:
    """Residual of every law against ``batches`` loss gradients; sets status and max_residual."""
    if not laws:
        return
    gen = torch.Generator().manual_seed(seed)
    grads = fields.evaluate(theta, fields.sample(batches, gen))
    norms = grads.norm(dim=1)
    for law in laws:
        support, g = law.law.sparse_grad(theta)
        law.sparse_grad = (support, g)
        gnorm = g.norm()
        if gnorm == 0:
            law.max_residual, law.status = 0.0, "exact"
            continue
        dots = (grads[:, support] @ g).abs() / (gnorm * norms).clamp_min(1e-300)
        residual = float(dots.max())
        law.max_residual = residual
        if residual < EXACT:
            law.status = "exact"
        elif law.approximate_cause is not None and residual < APPROXIMATE:
            law.status = "approximate"
        else:
            law.status = "failed"


def independent_count(laws: list[ModuleLaw], theta: torch.Tensor, D: int, rtol: float = 1e-8) -> int:
    """Rank of the laws' gradients at theta, per group of laws sharing coordinates (sparse)."""
    if not laws:
        return 0
    rows, cols, vals = [], [], []
    for r, law in enumerate(laws):
        support, g = law.sparse_grad if law.sparse_grad is not None else law.law.sparse_grad(theta)
        g = g / g.norm().clamp_min(1e-300)
        rows.append(np.full(support.numel(), r))
        cols.append(support.numpy())
        vals.append(g.numpy())
    jac = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(laws), D))
    gram = (jac @ jac.T).tocsr()
    n_groups, labels = connected_components(gram != 0, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_groups + 1))
    total = 0
    for group in range(n_groups):
        idx = order[bounds[group]:bounds[group + 1]]
        if idx.size == 1:
            total += int(jac[idx[0]].nnz > 0)
            continue
        sub = jac[idx]
        used, inverse = np.unique(sub.indices, return_inverse=True)
        dense = np.zeros((idx.size, used.size))
        dense[np.repeat(np.arange(idx.size), np.diff(sub.indptr)), inverse] = sub.data
        sv = np.linalg.svd(dense, compute_uv=False)
        total += int((sv > rtol * sv[0]).sum()) if sv.size and sv[0] > 0 else 0
    return total
