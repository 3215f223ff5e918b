"""Check the engine's brackets against finite differences: one more derivative, independently.

The engine evaluates a level-k right-nested bracket
``[X, Y](theta) = DY(theta) X(theta) - DX(theta) Y(theta)`` with X = chi_p1 and
Y = [chi_p2, [..., chi_pk]] the level-(k-1) bracket, by automatic
derivatives of the fields batched with ``vmap``: forward mode
(``torch.func.jvp``), and for gradient fields reverse mode through the
symmetric Hessian (``torch.func.vjp``, see :func:`conslaw.lie.bracket_value`).
A native op whose nested derivative is wrong gives wrong brackets without any
error (see :mod:`conslaw.composite`). This check recomputes the two
directional derivatives by central differences of the lower-order values X
and Y (taken from the engine's own evaluation, :class:`conslaw.lie.Exemplars`):

    DY(theta) X  ~  (Y(theta + h_X X) - Y(theta - h_X X)) / (2 h_X)
    DX(theta) Y  ~  (X(theta + h_Y Y) - X(theta - h_Y Y)) / (2 h_Y)

where Y is evaluated by :func:`conslaw.lie.bracket_value` (at order k-1:
the check tests the k-th derivative given the lower ones, and level k = 2
tests the first derivative of the fields). The displacement |h_X X| = |h_Y Y| =
step * |theta|_rms (the typical size of one coordinate, |theta| / sqrt(D); 1
at theta = 0) with step = eps^(1/3) ~ 6e-6 in float64 balances the O(h^2)
truncation error against the O(eps / h) round-off. (A displacement
proportional to |theta| itself grows like sqrt(D) while the curvature does
not, and lets the truncation error dominate on larger models.)

The relative error of one bracket is

    |b_engine - b_fd| / max(s, |b_fd|, tiny),   s = |DY X| + |DX Y| (engine),

the size s of the two terms the bracket is the difference of (s >= |b_engine|;
it is the scale the engine divides every bracket by, so an error e here moves
the engine's normalized row by e). A bracket that vanishes by cancellation
therefore reads as round-off, not as 100 % error.

A difference quotient cannot resolve the derivative of round-off: when the
inner bracket Y has itself cancelled, |Y| < 1e-6 s_Y (s_Y the terms Y is
the difference of), the FD noise eps s_Y / h exceeds |DY X| and the sample
is not scored (``checked`` counts the scored ones; level 2, whose Y is a
field, is always scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_map

from .batching import vmap_or_loop
from .errors import ConslawError
from .fields import FieldSource
from .lie import bracket_terms, bracket_value

#: float64 machine epsilon^(1/3): the step of a central difference
DEFAULT_STEP = torch.finfo(torch.float64).eps ** (1 / 3)
DEFAULT_THRESHOLD = 1e-4
#: |Y| / s_Y below this: the inner bracket has cancelled to round-off and its FD derivative is noise
CANCELLED = 1e-6
TINY = 1e-300


@dataclass
class DerivativeCheck:
    """Worst relative error of the engine's brackets against central differences, per level and overall.

    ``levels[k]`` is None when no level-k sample could be scored (all inner brackets cancelled).
    """

    levels: dict[int, float | None]
    checked: dict[int, int]
    worst_relative_error: float
    threshold: float
    samples: int
    step: float

    @property
    def ok(self) -> bool:
        """True when every checked bracket agrees with its finite difference within ``threshold``."""
        return math.isfinite(self.worst_relative_error) and self.worst_relative_error <= self.threshold

    def as_dict(self) -> dict:
        """JSON-ready: per-level worst errors, the overall worst, the threshold and ok (NaN written as null)."""
        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        return {"levels": [{"level": k, "worst_relative_error": finite(e), "checked": self.checked[k]}
                           for k, e in self.levels.items()],
                "worst_relative_error": finite(self.worst_relative_error), "threshold": self.threshold,
                "ok": self.ok, "samples": self.samples, "step": self.step}


def _central_batched(fn, theta: torch.Tensor, directions: torch.Tensor, length: float, ps: tuple, source=None):
    """Row i: D fn(theta; ps_i) directions_i by a central difference of displacement ``length`` along directions_i.

    ``fn(t, *p)`` is evaluated at the 2 n points theta +- h_i directions_i in one ``vmap``; a zero
    direction gives a zero derivative.
    """
    norms = directions.norm(dim=1)
    h = torch.where(norms > 0, length / norms.clamp_min(TINY), torch.ones_like(norms)).unsqueeze(1)
    points = torch.cat([theta + h * directions, theta - h * directions])
    repeated = [tree_map(lambda t: torch.cat([t, t]), p) for p in ps]
    values = vmap_or_loop(fn, source)(points, *repeated)
    n = directions.shape[0]
    return torch.where(norms.unsqueeze(1) > 0, (values[:n] - values[n:]) / (2 * h), torch.zeros_like(values[:n]))


def _worst(errors: list[float]) -> float | None:
    """The largest error, NaN first; None for none."""
    return max(errors, key=lambda e: e if math.isfinite(e) else math.inf) if errors else None


def derivative_check(source: FieldSource, theta: torch.Tensor, *, levels: int = 3, samples: int = 2,
                     generator: torch.Generator | None = None, step: float | None = None,
                     threshold: float = DEFAULT_THRESHOLD, exemplars: dict | None = None) -> DerivativeCheck:
    """Compare ``samples`` random brackets at each level 2..``levels`` with central differences.

    The engine's brackets are evaluated batched (``vmap``), as the engine does, and
    so are the finite differences (all samples and both signs in one ``vmap``).
    ``generator`` defaults to seed 0; ``step`` to eps^(1/3) (relative to
    |theta|_rms, see the module doc). ``exemplars`` (``LieResult.exemplars``):
    the engine's own brackets per level, checked instead of fresh draws where present and drawn at ``theta``.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ConslawError(f"derivative_check needs levels >= 2 (brackets), got {levels!r}",
                           "pass levels=2 or more (3 checks the third derivative of the loss)")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConslawError(f"derivative_check needs samples >= 1, got {samples!r}", "pass samples=2 or so")
    step = DEFAULT_STEP if step is None else float(step)
    if not 0.0 < step < 1.0:
        raise ConslawError(f"step must be in (0, 1), got {step}", "leave step=None for eps^(1/3)")
    theta = source.space.check_theta(theta)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    rms = float(theta.norm()) / math.sqrt(theta.numel())
    length = step * (rms if rms > 0 else 1.0)
    worst: dict[int, float | None] = {}
    checked: dict[int, int] = {}
    for level in range(2, levels + 1):
        if exemplars and level in exemplars and torch.equal(exemplars[level].theta, theta):
            ex = exemplars[level]
            batched, values, scales, x, y, y_scales = ex.args, ex.values, ex.scales, ex.x, ex.y, ex.y_scales
        else:
            batched = [source.sample(samples, generator) for _ in range(level)]
            values, scales, x, y, y_scales = vmap_or_loop(lambda *p: bracket_terms(source, theta, p),
                                                          source)(*batched)
        first, rest = batched[0], batched[1:]
        n = values.shape[0]
        # [X, Y] = DY X - DX Y, both directional derivatives by central differences of the lower-order values
        if level == 2:  # Y = chi_p2 is a field too: both quotients in one vmap
            both = _central_batched(lambda t, p: source.field(t, p), theta, torch.cat([x, y]), length,
                                    (tree_map(lambda a, b: torch.cat([a, b]), rest[0], first),), source=source)
            fd = both[:n] - both[n:]
        else:
            fd = _central_batched(lambda t, *p: bracket_value(source, t, p)[0], theta, x, length, tuple(rest),
                                  source=source) - \
                _central_batched(lambda t, p: source.field(t, p), theta, y, length, (first,), source=source)
        errors = []
        for i in range(values.shape[0]):
            if level > 2 and float(y[i].norm()) < CANCELLED * float(y_scales[i]):
                continue  # Y is round-off: its difference quotient is noise
            denominator = max(float(scales[i]), float(fd[i].norm()), TINY)
            errors.append(float((values[i] - fd[i]).norm()) / denominator)
        worst[level], checked[level] = _worst(errors), len(errors)
    overall = _worst([e for e in worst.values() if e is not None])  # level 2 is always scored
    return DerivativeCheck(levels=worst, checked=checked, worst_relative_error=math.nan if overall is None else overall,
                           threshold=threshold, samples=samples, step=step)


def checked_derivatives(source, theta: torch.Tensor, lie, seed: int,
                        warnings: list[str]) -> DerivativeCheck | None:
    """The engine's brackets against finite differences, at the levels it used (up to 3); a warning when off.

    Args:
        source: the fields counted.
        theta: the point.
        lie: the engine's result (its number of levels).
        seed: seed of the sampled brackets.
        warnings: where a failed check is reported.
    """
    levels = min(3, len(lie.levels))
    if levels < 2:
        return None
    check = derivative_check(source, theta, levels=levels, samples=2, generator=torch.Generator().manual_seed(seed),
                             exemplars=lie.exemplars)
    if not check.ok:
        warnings.append(f"derivative check failed: the engine's brackets differ from finite differences by "
                        f"{check.worst_relative_error:.1e} (> {check.threshold:g}); the count is not trustworthy "
                        "(an op with a wrong higher derivative: see conslaw.composite; or a field declared a "
                        "gradient that is not one: FieldSource.gradient)")
    return check
