"""find_laws(model): every conservation law of a real nn.Module, named, verified, counted.

1. analyse the model (float64 copy, loss-gradient fields, torch.fx trace; :mod:`.analysis`);
2. collect the law families (:mod:`.rescaling`, :mod:`.attention`, :mod:`.normalization`,
   :mod:`.translation`) and the handlers of leaf modules (:mod:`.registry`);
3. verify every law on the model (:mod:`.status`): exact at round-off, approximate
   with a known cause, or failed; a law failed with a normalization's eps as cause is re-checked
   with eps shrunk (:mod:`.eps_check`) and is approximate when it then holds at round-off;
4. count: ``named_laws`` = independent exact laws (sparse rank of their
   gradients), and for small models ``lie_laws`` = D - dim Lie of the loss-gradient
   fields (Thm 2.11, JSON key ``numeric_laws``), both at a generic point near theta (1 % moved),
   so that unnamed laws show up as a difference;
5. list the parameters no law touches (``uncovered_params``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..derivative_check import DerivativeCheck, checked_derivatives
from ..errors import ConslawError
from ..laws.gram_rank import LawRanks
from ..lie import lie_trace_dimension
from ..params import unwrap_model
from ..rank import GAP_WARNING, GroupTooLarge
from ..threads import engine_threads
from .analysis import ModelAnalysis, analyse
from .attention import handwritten_attention_laws
from .embeddings import embedding_laws
from .eps_check import recheck_eps
from .findings import Findings
from .fixed_lookups import unread_row_laws
from .gated import gated_laws
from .layer_scale import layer_scale_laws
from .normalization import normalization_laws
from .norms import is_rmsnorm
from .ops import KNOWN_PARAMETRIC
from .patch_embedding import patch_embedding_laws
from .progress import progress
from .projections import is_conv1d
from .registry import HandlerRegistry
from .rescaling import rescaling_laws
from .shift import shift_laws
from .status import COUNT_PERTURBATION, CheckedLaw, check_laws, perturbed
from .stream_mixing import encoder_stream_laws
from .translation import softmax_laws

#: the Lie engine runs by default up to this many parameters
NUMERIC_MAX_D = 4000


@dataclass
class ModelLaws:
    """The laws of a model, their verification, and the counts."""

    model_name: str
    D: int
    laws: list[CheckedLaw]
    named_laws: int
    lie_laws: int | None
    uncovered_params: list[str]
    loss: str
    seconds: float
    numeric_seconds: float | None = None
    numeric_gap: float | None = None
    #: independent approximate laws beyond the exact ones: rank(exact + approximate) - named_laws (None: too large)
    approximate_laws: int | None = 0
    derivative_check: DerivativeCheck | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        exact = sum(c.status == "exact" for c in self.laws)
        lie = "" if self.lie_laws is None else f", lie_laws={self.lie_laws}"
        return (f"ModelLaws({self.model_name}: D={self.D}, {len(self.laws)} laws ({exact} exact), "
                f"named_laws={self.named_laws}{lie}, loss={self.loss})")

    def _repr_html_(self) -> str:
        from ..display import law_rows, laws_table

        lie = "" if self.lie_laws is None else f", D - dim Lie = {self.lie_laws}"
        caption = (f"{self.model_name}: D = {self.D:,}, {self.named_laws} independent exact laws named{lie}; "
                   f"{len(self.uncovered_params)} parameters without a law")
        return laws_table(law_rows(self.laws), caption, ("name", "formula", "family", "status", "residual"))

    @property
    def numeric_laws(self) -> int | None:
        """Alias of :attr:`lie_laws` (the ``laws`` JSON key)."""
        return self.lie_laws

    @property
    def unnamed_laws(self) -> int | None:
        """Laws the engine counts beyond the named ones (None without a count; < 0: more named than counted).

        The engine counts the laws that hold at its resolution: an approximate law (broken by a normalization's
        eps) is seen as broken unless eps is tiny, so approximate laws explain at most the excess over the
        exact named ones: with d = numeric - named, unnamed = d - min(approximate, max(d, 0)).
        """
        if self.lie_laws is None:
            return None
        d = self.lie_laws - self.named_laws
        return d - min(self.approximate_laws or 0, max(d, 0))

    def exact(self) -> list[CheckedLaw]:
        """The laws verified exact."""
        return [law for law in self.laws if law.status == "exact"]

    def select(self, *, family: str | None = None, module: str | None = None, head: int | None = None,
               matrix: str | None = None, status: str | None = "exact") -> list[CheckedLaw]:
        """The laws with the given declared structure (None: any), by default only the exact ones.

        Args:
            family: law family, e.g. ``attention``.
            module: the module name.
            head: the attention head.
            matrix: the matrix law, e.g. ``Q Q^T - K K^T``.
            status: ``exact``, ``approximate``, ``failed``, or None for all.
        """
        def keep(c: CheckedLaw) -> bool:
            law = c.law
            return all(want is None or have == want for want, have in (
                (family, law.family), (module, law.module), (head, law.head), (matrix, law.matrix),
                (status, c.status)))
        return [c for c in self.laws if keep(c)]

    def as_dict(self) -> dict:
        """The JSON object of ``conslaw laws --json`` (DESIGN.md's CLI contract)."""
        return {
            "model": self.model_name, "D": self.D, "loss": self.loss,
            "laws": [law.as_dict() for law in self.laws],
            "families": self.family_table(),
            "uncovered_params": self.uncovered_params,
            "named_laws": self.named_laws, "approximate_laws": self.approximate_laws, "numeric_laws": self.lie_laws,
            "unnamed_laws": self.unnamed_laws,
            "numeric_spectral_gap": self.numeric_gap, "seconds": self.seconds,
            "numeric_seconds": self.numeric_seconds,
            "derivative_check": None if self.derivative_check is None else self.derivative_check.as_dict(),
            "warnings": self.warnings, "notes": self.notes,
        }

    def family_table(self) -> list[dict]:
        """One row per (family, module): count, exact/approximate/failed, worst residual."""
        rows: dict[tuple, dict] = {}
        for c in self.laws:
            row = rows.setdefault((c.family, c.module), {
                "family": c.family, "module": c.module, "formula": c.law.formula, "count": 0,
                "exact": 0, "approximate": 0, "failed": 0, "max_residual": 0.0})
            row["count"] += 1
            row[c.status] += 1
            row["max_residual"] = max(row["max_residual"], c.max_residual)
        return list(rows.values())


def find_laws(model: nn.Module, example_input: torch.Tensor, loss: str = "mse", *, batches: int = 6,
              seed: int = 0, numeric: bool | None = None, name: str | None = None,
              handlers: HandlerRegistry | None = None, max_memory: float | None = None,
              front_end: str = "auto") -> ModelLaws:
    """Find, verify and count the conservation laws of ``model``.

    A law h is conserved by gradient flow when grad h(theta) is orthogonal to every loss-gradient field
    (Prop 2.3) and to their Lie brackets (Prop 2.9). ``find_laws`` traces the model (torch.fx, or torch.export
    for Hugging Face models), collects the known families (rescaling of ReLU-like units, eq. 17; attention
    Q Q^T - K K^T; normalization; softmax translation; handlers of leaf modules), verifies every candidate
    on the model's own loss-gradient fields at theta and at a perturbed point (``exact``, ``approximate``
    with a known cause, or ``failed``), and counts ``named_laws``, the independent exact ones, against
    ``lie_laws`` = D - dim Lie(W)(theta) (Thm 2.11) for models up to 4000 parameters. A ``torch.compile``d
    model is analysed through its original module.

        >>> found = conslaw.find_laws(model, x, "cross_entropy")
        >>> found.named_laws, found.lie_laws, found.exact()[:3]
        >>> monitor = conslaw.LawMonitor(model, found.exact())

    Attention runs with the math kernel of scaled_dot_product_attention: the
    fused CPU kernels have no forward-mode derivative, which the Lie brackets need.

    Args:
        model: the model (never modified: the analysis runs on a float64 copy).
        example_input: a batch (>= 2) of inputs, batch first.
        loss: ``mse``, ``cross_entropy``, ``next_token`` (a causal LM's), ``model`` (the loss the model returns;
            the example carries ``labels``), a :class:`conslaw.fields.losses.Loss` or a callable
            ``loss(output, target)`` (:mod:`conslaw.fields.losses`).
        batches: loss gradients per verification point.
        seed: seed of every random draw.
        numeric: run the Lie engine (default: when D <= 4000).
        name: the model's name in the output.
        handlers: module handlers for this call (default: :meth:`HandlerRegistry.default`).
        max_memory: GB allowed (default: the memory available now); larger models are refused before any work.
        front_end: graph front end: ``auto`` (torch.fx, else torch.export), ``fx`` or ``export``.
    """
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise ConslawError(f"batches must be an integer >= 1, got {batches!r}", "use the default 6")
    model = unwrap_model(model)  # a torch.compile'd model: its original module (same parameters)
    D = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # the thread policy of the engine (conslaw.threads): the cores not busy now, $CONSLAW_THREADS to override
    with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings(), engine_threads(D):
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        return _find_laws(model, example_input, loss, batches, seed, numeric, name,
                          handlers or HandlerRegistry.default(), max_memory, front_end)


def collect(analysis: ModelAnalysis, loss: str, registry: HandlerRegistry) -> Findings:
    """Every candidate law of the traced model: handlers, then the law families."""
    graph, space = analysis.graph, analysis.space
    if graph is None:
        raise ConslawError("collect needs a traced model analysis", "call analyse(..., traced=True)")
    findings = Findings()
    softmax = analysis.fields.loss_fn.softmax  # a softmax + cross-entropy loss (Prop 3.11)
    for node in graph.nodes:
        module = graph.module_of(node)
        handler = registry.handler_for(module) if module is not None else None
        if handler is not None and module is not None:
            handler.laws(str(node.target), module, space, findings)
    unknown_modules(analysis, registry, findings)
    rescaling_laws(graph, space, findings, registry.handler_for)
    handwritten_attention_laws(graph, space, findings)
    normalization_laws(graph, space, findings)
    embedding_laws(graph, space, findings, softmax)
    unread_row_laws(graph, space, findings)
    patch_embedding_laws(graph, space, findings)
    shift_laws(graph, space, findings)
    encoder_stream_laws(graph, space, findings)
    gated_laws(graph, space, findings)
    layer_scale_laws(graph, space, findings)
    if softmax:
        softmax_laws(graph, space, findings)
    return findings


def _find_laws(model, example_input, loss, batches, seed, numeric, name, registry, max_memory,
               front_end="auto") -> ModelLaws:
    start = time.perf_counter()
    analysis = analyse(model, example_input, loss, registry, max_memory=max_memory, batches=batches,
                       front_end=front_end)
    batches = min(batches, 4) if analysis.large else batches
    loss = analysis.fields.loss  # the loss's name (a callable's __name__)
    findings = collect(analysis, loss, registry)
    analysis.space.drop_index_cache()  # the laws hold their own indices
    findings.notes[:0] = analysis.notes
    fields, space, theta = analysis.fields, analysis.space, analysis.theta
    analysis.graph = None  # the traced graph is done with: free it before the fields
    draws = verification_draws(fields, theta, batches, seed)
    checked = check_laws(findings.laws, verification_points(fields, draws, batches, analysis.large))
    checked, note = recheck_eps(checked, analysis.model, fields, draws)  # one point's fields at a time
    if note is not None:
        findings.notes.append(note)
    del draws  # the moved theta (D floats): freed before the generic point below
    # ranks and the count at a generic point near theta (see below)
    generic = perturbed(space, theta, torch.Generator().manual_seed(seed + 1), COUNT_PERTURBATION)
    kept = [c for c in checked if c.status in ("exact", "approximate")]
    # one sparse matrix of the kept laws' unit gradients (12 bytes an entry; matrix laws as whole blocks),
    # its exact rows ranked first
    ranks = LawRanks([c.law for c in kept], generic, space.D)
    named = ranks.rank(np.array([c.status == "exact" for c in kept], dtype=bool))
    try:
        approximate = ranks.rank() - named
    except GroupTooLarge as exc:  # approximate laws can chain whole blocks together (BatchNorm ResNets)
        approximate = None
        findings.notes.append(f"approximate_laws not computed: {exc} (a dense block over 1 GiB)")
    del ranks
    lie_laws = numeric_seconds = gap = check = None
    if numeric or (numeric is None and space.D <= NUMERIC_MAX_D):
        t0 = time.perf_counter()
        # at a generic point near theta, not at theta: an initialisation is a special point (LayerNorm gamma = 1
        # and beta = 0, zero biases, a zero head) where the Lie rank (and the rank of the laws) can drop below
        # its value at every nearby theta, and the count of laws (Thm 2.11) is the one of a neighbourhood
        # (post-LN built-in at eps = 0: 51 at init, 50 around it). The move is small (1 % of each parameter's
        # rms) so that the point stays in theta's region: the 10 % verification point can kill a ReLU unit.
        lie = lie_trace_dimension(fields, generic, seed=seed)
        lie_laws, numeric_seconds, gap = lie.lie_laws, time.perf_counter() - t0, lie.spectral_gap
        findings.warnings += lie.warnings
        findings.warnings += degenerate_point_warning(space, theta, gap)
        check = checked_derivatives(fields, generic, lie, seed, findings.warnings)
    covered = {p for c in checked if c.status in ("exact", "approximate") for p in c.law.params}
    findings.warnings += [f"law {c.law.name!r} ({c.family}) failed verification: residual {c.max_residual:.2e}"
                          for c in checked if c.status == "failed"]
    return ModelLaws(model_name=name or type(model).__name__, D=space.D, laws=checked, named_laws=named,
                     lie_laws=lie_laws, approximate_laws=approximate,
                     uncovered_params=[p for p in space.names if p not in covered], loss=loss,
                     seconds=time.perf_counter() - start, numeric_seconds=numeric_seconds, numeric_gap=gap,
                     derivative_check=check, warnings=findings.warnings, notes=findings.notes)


def verification_draws(fields, theta: torch.Tensor, batches: int, seed: int) -> list[tuple[torch.Tensor, Any]]:
    """[(theta, batches), (moved theta, batches)]: the two verification points, theta moved by
    :data:`.status.PERTURBATION`, and their sampled batches (the perturbation drawn first, then each point's)."""
    gen = torch.Generator().manual_seed(seed)
    moved = perturbed(fields.space, theta, gen)
    return [(t, fields.sample(batches, gen)) for t in (theta, moved)]


def verification_points(fields, draws: Sequence[tuple[torch.Tensor, Any]], batches: int,
                        show: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | Iterator[torch.Tensor]]]:
    """(theta, fields at theta) for each of :func:`verification_draws`, lazily.

    A large model's fields come one at a time (:meth:`LossGradFields.rows`) with a progress bar on stderr.
    """
    with progress(total=len(draws) * batches, desc="loss gradients", unit="field", show=show) as bar:
        for t, ps in draws:
            rows = fields.rows(t, ps)
            yield t, rows if isinstance(rows, torch.Tensor) else bar.wrap(rows)


def unknown_modules(analysis: ModelAnalysis, registry: HandlerRegistry, findings: Findings) -> None:
    """Parametric leaf modules that no family or handler knows: warn, raise or stay silent (registry's mode)."""
    seen = set()
    graph = analysis.graph
    if graph is None:
        return
    for node in graph.nodes:
        module = graph.module_of(node)
        if module is None or node.target in seen or not any(True for _ in module.parameters(recurse=False)):
            continue
        seen.add(node.target)
        if isinstance(module, KNOWN_PARAMETRIC) or is_conv1d(module) or is_rmsnorm(module) \
                or registry.handler_for(module) is not None:
            continue
        message = (f"{node.target} ({type(module).__name__}) has no law handler: its parameters get no law of "
                   "their own")
        if registry.on_unknown == "error":
            raise ConslawError(message, "register a handler (conslaw.nn.HandlerRegistry.register)")
        if registry.on_unknown == "warn":
            findings.warnings.append(message + " (register one with conslaw.nn.register_handler)")


def degenerate_point_warning(space, theta: torch.Tensor, gap: float | None) -> list[str]:
    """A warning naming the parameters that are entirely zero at theta, when the Lie count's gap is small.

    Zero-initialised tensors (torchvision's ViT head and class token, timm's zero_init_last BatchNorm) make
    theta a special point: the generic point 1 % away is still nearly degenerate there, the Lie rank is not
    separated from round-off, and the count differs from the one at every generic point (the small
    torchvision ViT: 254 counted, no gap, at its init; 250 == 250 named, gap 6.6e3, with those tensors
    redrawn). Thm 2.11 counts at generic points: redraw them and count again.
    """
    if gap is None or gap >= GAP_WARNING:
        return []
    zero = [name for name in space.names if not bool(theta[space.slice(name)].any())]
    if not zero:
        return []
    biases = [name for name in zero if name.endswith("bias")]  # zero biases are common and rarely the cause
    others = [name for name in zero if name not in biases]
    shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
    if biases:
        shown += f"{' and ' if others else ''}{len(biases)} bias vector{'s' * (len(biases) > 1)}"
    return [f"parameters entirely zero at theta: {shown}; with a small spectral gap the count may be that of a "
            "degenerate point: redraw them (e.g. torch.nn.init.normal_(p, std=0.02)) and count again"]
