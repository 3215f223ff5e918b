"""LawMonitor: conservation laws along real training (float64, any optimizer).

Records every law's value at theta_0 and after each step, the relative error
|h(theta_k) - h(theta_0)| / |h(theta_0)| (Frobenius over groups of laws that
form a matrix, such as Q Q^T - K K^T), and, with weight decay lambda, the
corrected value h(theta_k e^{Lambda_k}) of Thm 2.1, where Lambda_k is the
integrated decay (-sum_i log(1 - tau_i lambda_i) for SGD steps, which undoes
the decay exactly). Lambda is kept per parameter: with an optimizer, every
parameter takes the learning rate and weight decay of its own parameter group,
so h is evaluated at theta_k e^{Lambda_k} with Lambda_k per coordinate (exact
for SGD's weight decay and for decoupled decay as in AdamW, where both scale a
parameter by 1 - lr lambda per step; Adam's coupled L2 decay passes through the
preconditioner and is not undone exactly). Also
estimates the constants of Prop 5.1: C_L (mean squared stochastic gradient
norm, eq. 26) from the gradients it sees.

    monitor = LawMonitor(model, laws)
    monitor.attach(optimizer)          # records after every optimizer.step()
    ...
    monitor.table(), monitor.to_csv(path), monitor.plot(path)

Two ways to record, never both: ``attach(optimizer)`` (a post-step hook records
every ``optimizer.step()``; attaching the same optimizer again is a no-op that
returns the same remover, attaching a second optimizer raises ConslawError), or
manual ``step(...)`` calls after each update (``step`` on an attached monitor
raises ConslawError: the hook already records that step). Exports are written
atomically.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConslawError
from .io import atomic_write, dumps_json, save_figure
from .laws import Law, QuadraticLaw
from .params import DTYPE, ParamSpace


def frobenius_error(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """|H_k - H_0|_F / |H_0|_F per row k of ``values`` (steps, entries), entries weighted by ``weights``.

    For the entries a <= b of a symmetric matrix law, off-diagonal entries have weight 2.

    Args:
        values: (steps, entries) values of the matrix's entries.
        weights: per-entry weights (all 1 when None).
    """
    w = np.ones(values.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    num = np.sqrt((w * (values - values[0]) ** 2).sum(axis=1))
    return num / max(float(np.sqrt((w * values[0] ** 2).sum())), 1e-300)


def prop51_bound(grad_sq: Sequence[float], lrs: Sequence[float], c_h: float = 2.0) -> np.ndarray:
    """C_h C_L / 2 sum_{i<k} tau_i^2 (eq. 27) at every step k, with C_L the running mean of |grad L_Z|^2 (eq. 26).

    Args:
        grad_sq: |grad L_{Z_i}(theta_i)|^2 per step.
        lrs: step sizes tau_i.
        c_h: bound on the law's Hessian norm (2 for differences of squared norms).
    """
    grad_sq, lrs = np.asarray(grad_sq, dtype=float), np.asarray(lrs, dtype=float)
    c_l = np.cumsum(grad_sq) / np.arange(1, len(grad_sq) + 1)
    return np.r_[0.0, c_h * c_l / 2 * np.cumsum(np.square(lrs))]


def matrix_groups(laws: Sequence[Law]) -> dict[str, tuple[list[int], np.ndarray]]:
    """Entries of one matrix law (same matrix, module and head) grouped, off-diagonal entries weighted 2."""
    groups: dict[str, tuple[list[int], list[float]]] = {}
    for j, law in enumerate(laws):
        if law.matrix is None:
            continue
        key = f"{law.module or ''} head {law.head}: {law.matrix}" if law.head is not None else \
            f"{law.module or ''}: {law.matrix}"
        idx, w = groups.setdefault(key, ([], []))
        idx.append(j)
        w.append(1.0 if len(law.unit) != 2 or law.unit[0] == law.unit[1] else 2.0)
    return {k: (idx, np.array(w)) for k, (idx, w) in groups.items() if len(idx) > 1}


def _decay(lr: float, weight_decay: float) -> float:
    """-log(1 - lr lambda): the integrated decay of one SGD step, which undoes theta <- (1 - lr lambda) theta."""
    if lr * weight_decay >= 1:
        raise ConslawError(f"lr * weight_decay = {lr * weight_decay:g} >= 1: the step zeroes or flips the parameters "
                           "and Thm 2.1's correction is undefined", "use lr * weight_decay < 1")
    return -math.log1p(-lr * weight_decay)


def squared_norms(p: torch.Tensor, axis: int) -> torch.Tensor:
    """|p[..., k, ...]|^2 for every k along ``axis``, accumulated in float64.

    Contiguous trailing dimensions are reduced first (a fast, vectorized reduction), then the
    leading ones: 5x faster than one reduction over non-contiguous dimensions for conv weights.
    """
    inner = torch.linalg.vector_norm(p.reshape(*p.shape[:axis + 1], -1), dim=-1, dtype=DTYPE).square()
    return inner.sum(dim=tuple(range(axis))) if axis else inner


class LawMonitor:
    """Track laws of ``model`` during training (see the module docstring).

    Args:
        model: the model being trained.
        laws: its laws (``find_laws(model).exact()``, a catalog's, or your own).
        weight_decay: lambda (or lambda(k)) for manual ``step(lr=...)`` calls on all parameters; with an
            optimizer (``attach`` or ``step(optimizer=...)``) each parameter group's own ``weight_decay`` is used.
        groups: extra Frobenius groups: name -> law indices.
        space: the parameter layout (default: the model's trainable parameters).
        estimate_constants: accumulate |grad|^2 for Prop 5.1's C_L.
    """

    def __init__(self, model: nn.Module, laws: Sequence[Law], weight_decay: float | Callable[[int], float] = 0.0,
                 groups: dict[str, list[int]] | None = None, space: ParamSpace | None = None,
                 estimate_constants: bool = True) -> None:
        self.model = model
        self.space = space or ParamSpace.from_module(model)
        self.laws = list(laws)
        if not self.laws:
            raise ConslawError("LawMonitor needs at least one law", "pass the laws of find_laws(model) or a catalog")
        for law in self.laws:
            missing = [p for p in law.params if p not in self.space.shapes]
            if missing:
                raise ConslawError(f"law {law.name!r} uses parameters {missing} that {type(model).__name__} does not "
                                   "have", "monitor the laws found for this very model")
        self._weight_decay_arg = weight_decay
        self.weight_decay = weight_decay if callable(weight_decay) else (lambda k, wd=weight_decay: wd)
        #: Frobenius groups: the entries of every matrix law (weights 2 off the diagonal), and ``groups``
        self.groups = {**matrix_groups(self.laws),
                       **{name: (list(idx), np.ones(len(idx))) for name, idx in (groups or {}).items()}}
        #: accumulate |grad|^2 at every step for C_L of Prop 5.1 (one more pass over the gradients)
        self.estimate_constants = estimate_constants
        self._vectorized = self._build_vectorized()
        self.values: list[np.ndarray] = []
        self.corrected: list[np.ndarray] = []
        self.losses: list[float] = []
        #: integrated weight decay per parameter name (Thm 2.1): h is corrected at theta_k e^{Lambda_k}
        self.Lambda: dict[str, float] = dict.fromkeys(self.space.names, 0.0)
        self.grad_sq: list[float] = []
        self.lrs: list[float] = []
        self._attached: tuple[torch.optim.Optimizer, Callable] | None = None
        self._checked: set[int] = set()
        self.record()

    def theta(self) -> torch.Tensor:
        """The model's current parameters as one flat float64 vector (ParamSpace order)."""
        params = dict(self.model.named_parameters())
        return torch.cat([params[n].detach().to("cpu", DTYPE).reshape(-1) for n in self.space.names])

    def _build_vectorized(self):
        """Fast evaluation: laws made of squared norms of parameter slices (rescaling laws) from per-axis
        float64 norms of the parameters; all other quadratic laws by one gather over the parameters they use."""
        if not all(isinstance(law, QuadraticLaw) for law in self.laws):
            return None
        slots: dict[tuple[str, int], list] = {}
        gathered = []
        for j, law in enumerate(self.laws):
            if law.norm_terms:
                for sign, slot in law.norm_terms:
                    entry = slots.setdefault((slot.name, slot.axis), [[], [], []])
                    entry[0] += list(slot.units)
                    entry[1] += [j] * len(slot.units)
                    entry[2] += [sign] * len(slot.units)
            else:
                gathered.append(j)
        slot_plan = [(name, axis, torch.tensor(u), torch.tensor(seg), torch.tensor(sign, dtype=DTYPE))
                     for (name, axis), (u, seg, sign) in slots.items()]
        names = sorted({p for j in gathered for p in self.laws[j].params}, key=self.space.names.index)
        offsets, start = {}, 0
        for name in names:
            offsets[name] = (self.space.slice(name).start, start)
            start += self.space.numel(name)

        def compact(index: torch.Tensor) -> torch.Tensor:
            out = index.clone()
            for name in names:
                sl = self.space.slice(name)
                inside = (index >= sl.start) & (index < sl.stop)
                out[inside] = index[inside] - sl.start + offsets[name][1]
            return out

        laws = [self.laws[j] for j in gathered]
        cat = (lambda xs, dt=torch.long: torch.cat(xs) if xs else torch.zeros(0, dtype=dt))  # noqa: E731
        gather_plan = (
            names, torch.tensor(gathered, dtype=torch.long),
            compact(cat([law.quad[0] for law in laws])), compact(cat([law.quad[1] for law in laws])),
            cat([law.quad[2] for law in laws], DTYPE),
            cat([torch.full((law.quad[0].numel(),), k) for k, law in enumerate(laws)]),
            compact(cat([law.lin[0] for law in laws])), cat([law.lin[1] for law in laws], DTYPE),
            cat([torch.full((law.lin[0].numel(),), k) for k, law in enumerate(laws)]))
        return slot_plan, gather_plan

    def _evaluate_fast(self, scales: dict[str, float] | None = None) -> np.ndarray:
        """Every law at theta (``scales`` None) or at theta scaled by ``scales[name]`` per parameter."""
        slot_plan, (names, rows, qi, qj, qc, seg_q, lk, lc, seg_l) = self._vectorized
        params = dict(self.model.named_parameters())
        out = torch.zeros(len(self.laws), dtype=DTYPE)
        factor = (lambda name: 1.0) if scales is None else scales.__getitem__
        with torch.no_grad():
            for name, axis, units, seg, sign in slot_plan:
                norms = squared_norms(params[name].detach(), axis).cpu()  # laws are evaluated on the CPU
                out.index_add_(0, seg, sign * norms[units] * factor(name) ** 2)
            if len(rows):
                theta = torch.cat([params[n].detach().to("cpu", DTYPE).reshape(-1) * factor(n) for n in names])
                part = torch.zeros(len(rows), dtype=DTYPE).index_add(0, seg_q, qc * theta[qi] * theta[qj])
                part = part.index_add(0, seg_l, lc * theta[lk])
                out[rows] = part
        return out.numpy()

    def _evaluate(self, theta: torch.Tensor) -> np.ndarray:
        return np.array([float(law.value(theta)) for law in self.laws])

    def _scales(self) -> dict[str, float] | None:
        """e^{Lambda} per parameter, or None while no decay has accumulated."""
        return {n: math.exp(lam) for n, lam in self.Lambda.items()} if any(self.Lambda.values()) else None

    def record(self, loss: float | None = None) -> None:
        """Record the laws' values (plain and weight-decay corrected) and the loss, if given."""
        scales = self._scales()
        if self._vectorized is not None:
            values = self._evaluate_fast()
            corrected = self._evaluate_fast(scales) if scales else values
        else:
            theta = self.theta()
            values = self._evaluate(theta)
            if scales:
                factor = torch.cat([torch.full((self.space.numel(n),), scales[n], dtype=DTYPE)
                                    for n in self.space.names])
                corrected = self._evaluate(theta * factor)
            else:
                corrected = values
        if not np.all(np.isfinite(values)) or (loss is not None and not math.isfinite(loss)):
            warnings.warn(f"non-finite law value or loss at step {len(self.values)}: recorded as is; "
                          "the training code decides what to do", RuntimeWarning, stacklevel=2)
        self.values.append(values)
        self.corrected.append(corrected)
        self.losses.append(float("nan") if loss is None else float(loss))

    def step(self, lr: float | None = None, loss: float | None = None,
             optimizer: torch.optim.Optimizer | None = None) -> None:
        """Record after one update of a manual loop.

        Args:
            lr: the step size (needed with the constructor's weight decay, and for Prop 5.1's bound).
            loss: the mini-batch loss, recorded with the step.
            optimizer: read every parameter group's ``lr`` and ``weight_decay`` for the Thm 2.1 correction
                (per parameter) instead of ``lr`` and the constructor's ``weight_decay``.

        Raises:
            ConslawError: the monitor is attached to an optimizer (its hook already records every step), or
                weight decay without a step size, or a step with lr * weight_decay >= 1.
        """
        if self._attached is not None:
            raise ConslawError("this monitor is attached to an optimizer, whose every step() it records already: a "
                               "manual step() would record the same step twice",
                               "drop the manual monitor.step() calls, or detach first (call the function that "
                               "attach() returned)")
        self._advance(lr, loss, optimizer)

    def _advance(self, lr: float | None, loss: float | None, optimizer: torch.optim.Optimizer | None) -> None:
        """Accumulate the decay of one step (per parameter), the gradient norm, and record."""
        if optimizer is not None:
            self._check_optimizer(optimizer)
            rates = self._group_rates(optimizer)
            for name, (group_lr, group_wd) in rates.items():
                if group_wd:
                    self.Lambda[name] += _decay(group_lr, group_wd)
            if lr is None and rates:
                lr = max(group_lr for group_lr, _ in rates.values())
        else:
            k = len(self.values) - 1
            lam = float(self.weight_decay(k))
            if lam and lr is None:
                raise ConslawError("with weight decay the monitor needs the step size",
                                   "call monitor.step(lr=...), or monitor.step(optimizer=opt)")
            if lam:
                increment = _decay(lr, lam)
                for name in self.Lambda:
                    self.Lambda[name] += increment
        if lr is not None:
            self.lrs.append(float(lr))
        if self.estimate_constants:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:
                self.grad_sq.append(float(sum(torch.linalg.vector_norm(g, dtype=DTYPE) ** 2 for g in grads)))
        self.record(loss)

    def _group_rates(self, optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
        """(lr, weight_decay) of the parameter group of every monitored parameter the optimizer trains."""
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        params = dict(self.model.named_parameters())
        rates = {}
        for name in self.space.names:
            group = group_of.get(id(params[name]))
            if group is not None:
                rates[name] = (float(group["lr"]), float(group.get("weight_decay", 0.0) or 0.0))
        return rates

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Warn once per optimizer: laws on parameters it does not train, laws across different step sizes,
        a constructor weight decay that the optimizer's groups replace."""
        if id(optimizer) in self._checked:
            return
        self._checked.add(id(optimizer))
        rates = self._group_rates(optimizer)
        touched = {p for law in self.laws for p in law.params}
        untrained = sorted(touched - set(rates), key=self.space.names.index)
        if untrained:
            laws = [law.name for law in self.laws if set(law.params) & set(untrained)]
            warnings.warn(f"the optimizer does not train {', '.join(untrained)}, which {len(laws)} monitored law(s) "
                          f"touch (e.g. {laws[0]!r}): with part of its parameters frozen a law is in general not "
                          "conserved; give the optimizer all of the model's parameters, or monitor the laws of the "
                          "trained ones only", RuntimeWarning, stacklevel=3)
        mixed = [law.name for law in self.laws if len({rates[p][0] for p in law.params if p in rates}) > 1]
        if mixed:
            warnings.warn(f"{len(mixed)} monitored law(s) (e.g. {mixed[0]!r}) touch parameter groups with different "
                          "learning rates: they are not conserved to first order (Prop 5.1 assumes one step size)",
                          RuntimeWarning, stacklevel=3)
        given = self._weight_decay_arg
        if callable(given) or (given and any(wd != given for _, wd in rates.values())):
            warnings.warn(f"LawMonitor(weight_decay={given!r}) is ignored with an optimizer: the weight decay of each "
                          "parameter group is read from optimizer.param_groups", RuntimeWarning, stacklevel=3)

    def attach(self, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        """Record after every ``optimizer.step()`` (per-group lr and weight decay); returns the hook's remover.

        Idempotent: attaching the same optimizer again does nothing and returns the same remover.

        Raises:
            ConslawError: the monitor is already attached to another optimizer.
        """
        if self._attached is not None:
            if self._attached[0] is optimizer:
                return self._attached[1]
            raise ConslawError("this monitor is already attached to another optimizer: both would record every step",
                               "call the function that the first attach() returned, or use one monitor per "
                               "optimizer")
        self._check_optimizer(optimizer)

        def hook(opt, args, kwargs):
            self._advance(None, None, opt)

        handle = optimizer.register_step_post_hook(hook)

        def remove() -> None:
            handle.remove()
            if self._attached is not None and self._attached[1] is remove:
                self._attached = None

        self._attached = (optimizer, remove)
        return remove

    def relative_errors(self, corrected: bool = True) -> np.ndarray:
        """(steps + 1, laws + groups): |h_k - h_0| / |h_0| per law, then Frobenius per group."""
        vals = np.array(self.corrected if corrected else self.values)
        h0 = vals[0]
        per_law = np.abs(vals - h0) / np.maximum(np.abs(h0), 1e-300)
        cols = [per_law]
        for idx, weights in self.groups.values():
            cols.append(frobenius_error(vals[:, idx], weights)[:, None])
        return np.concatenate(cols, axis=1)

    @property
    def columns(self) -> list[str]:
        """Column names of :meth:`relative_errors`: one per law, then one per Frobenius group."""
        return [law.name for law in self.laws] + [f"{g} (Frobenius)" for g in self.groups]

    def prop51_bound(self, c_h: float = 2.0) -> np.ndarray:
        """C_h C_L / 2 sum_{i<k} tau_i^2 (eq. 27), with C_L the running mean of |grad L_Z|^2 (eq. 26)."""
        if not self.lrs or not self.grad_sq:
            raise ConslawError("the bound needs step sizes and gradients", "call step(lr=...) after backward()")
        return prop51_bound(self.grad_sq, self.lrs, c_h)

    def table(self) -> list[dict]:
        """One row per recorded step: step, loss, and every column's relative error."""
        errors = self.relative_errors()
        return [{"step": k, "loss": self.losses[k], **dict(zip(self.columns, map(float, errors[k]), strict=True))}
                for k in range(len(self.values))]

    def to_csv(self, path: str) -> None:
        """Write :meth:`table` as CSV to ``path`` (atomically)."""
        rows = self.table()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, text.getvalue())

    def to_json(self, path: str) -> None:
        """Write the laws, values, corrected values, losses and relative errors as standard JSON (NaN: null)."""
        atomic_write(path, dumps_json({"laws": [law.name for law in self.laws], "values": np.array(self.values),
                                       "corrected": np.array(self.corrected), "losses": self.losses,
                                       "Lambda": self.Lambda, "relative_errors": self.relative_errors()}))

    def plot(self, path: str) -> None:
        """Plot relative errors (log scale) and losses against steps into ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
        errors = self.relative_errors()
        for j, name in enumerate(self.columns):
            top.semilogy(np.maximum(errors[:, j], 1e-18), label=name)
        top.set_ylabel("relative error")
        top.legend(fontsize=6)
        bottom.plot(self.losses)
        bottom.set_ylabel("loss")
        bottom.set_xlabel("step")
        fig.tight_layout()
        try:
            save_figure(fig, path, dpi=120)
        finally:
            plt.close(fig)
