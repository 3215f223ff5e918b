"""LawMonitor: conservation laws along real training (float64, any optimizer, any device).

Records every law's value at theta_0 and after each (or every n-th) optimizer step, and the
scale-aware relative error

    e_k = |h(theta_k) - h(theta_0)| / max(|h(theta_0)|, s_ref),

where s_ref is the scale of the law's terms (:mod:`conslaw.law_evaluator`: sum of the absolute values of
its terms) at theta_0, or, for a law whose terms are all exactly 0 at theta_0 (a zero-initialised bias),
at the first record where they are not (so with ``every_n_steps`` > 1 such a law's scale comes from a later
step than with 1): the error is never a division by an exact zero, and while the
terms stay exactly 0 the law does not move (e_k = 0). Laws that form a matrix (Q Q^T - K K^T) also get the
Frobenius error |H_k - H_0|_F / |D|_F over their entries (D: the entries' denominators). With weight decay
lambda the corrected value h(theta_k e^{Lambda_k}) of Thm 2.1 is recorded, Lambda_k being the integrated
decay (-sum_i log(1 - tau_i lambda_i) for SGD steps, which undoes the decay exactly), per parameter: with an
optimizer every parameter takes the learning rate and weight decay of its own parameter group (exact for
SGD's weight decay and for decoupled decay as in AdamW; Adam's coupled L2 decay passes through the
preconditioner and is not undone exactly). Also estimates C_L of Prop 5.1 (mean squared stochastic
gradient norm, eq. 26) from the gradients at the recorded steps.

    monitor = LawMonitor(model, laws, every_n_steps=10)
    monitor.attach(optimizer)          # records after every 10th optimizer.step()
    ...                                # monitor.set_loss(loss) before a step records its loss
    monitor.table(), monitor.to_csv(path), monitor.plot(path), monitor.log_to(writer)

History is kept once, in preallocated growable arrays (:class:`conslaw.history.History`): a record costs
the same at step 10 000 as at step 10, and :meth:`LawMonitor.last_errors` reads the newest row in O(laws).
Laws are evaluated on the parameters' device. ``attach`` unwraps optimizer wrappers (accelerate's
``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``: their ``.optimizer``) and the model may be a
``torch.compile``d module (its ``_orig_mod`` is monitored).

Two ways to record, never both: ``attach(optimizer)`` (a post-step hook records every ``optimizer.step()``;
attaching the same optimizer again is a no-op that returns the same remover, attaching a second optimizer
raises ConslawError), or manual ``step(...)`` calls after each update (``step`` on an attached monitor
raises ConslawError: the hook already records that step). Exports are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConslawError
from .history import History
from .io import atomic_write, dumps_json
from .law_evaluator import LawEvaluator, squared_norms
from .laws import Law, QuadraticLaw
from .params import DTYPE, ParamSpace, unwrap_model

__all__ = ["LawMonitor", "frobenius_error", "matrix_groups", "prop51_bound", "squared_norms", "unwrap_model",
           "unwrap_optimizer"]

#: columns of the per-record scalars: optimizer step, loss, sum of tau_i^2 so far, |grad L|^2 at the record
_STEP, _LOSS, _TAU2, _GRAD_SQ = range(4)


def frobenius_error(values: np.ndarray, weights: np.ndarray | None = None,
                    denominators: np.ndarray | None = None) -> np.ndarray:
    """|H_k - H_0|_F / |H_0|_F per row k of ``values`` (steps, entries), entries weighted by ``weights``.

    For the entries a <= b of a symmetric matrix law, off-diagonal entries have weight 2.

    Args:
        values: (steps, entries) values of the matrix's entries.
        weights: per-entry weights (all 1 when None).
        denominators: per-entry denominators replacing |H_0| (the monitor's max(|h_0|, scale of terms));
            an all-zero denominator gives the absolute change.
    """
    w = np.ones(values.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    num = np.sqrt((w * (values - values[0]) ** 2).sum(axis=1))
    ref = values[0] if denominators is None else denominators
    den = float(np.sqrt((w * ref ** 2).sum()))
    return num / den if den > 0 else num


def prop51_bound(grad_sq: Sequence[float], lrs: Sequence[float], c_h: float = 2.0) -> np.ndarray:
    """C_h C_L / 2 sum_{i<k} tau_i^2 (eq. 27) at every step k, with C_L the running mean of |grad L_Z|^2 (eq. 26).

    Args:
        grad_sq: |grad L_{Z_i}(theta_i)|^2 per step.
        lrs: step sizes tau_i.
        c_h: bound on the law's Hessian norm (2 for differences of squared norms).
    """
    g, tau = np.asarray(grad_sq, dtype=float), np.asarray(lrs, dtype=float)
    c_l = np.cumsum(g) / np.arange(1, len(g) + 1)
    return np.r_[0.0, c_h * c_l / 2 * np.cumsum(np.square(tau))]


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


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside wrappers such as accelerate's ``AcceleratedOptimizer`` or Lightning's
    ``LightningOptimizer`` (each keeps it as ``.optimizer``).

    Raises:
        ConslawError: no ``torch.optim.Optimizer`` inside.
    """
    seen = optimizer
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer) or (inner is not None and hasattr(inner, "optimizer")):
            optimizer = inner
            continue
        break
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConslawError(f"expected a torch.optim.Optimizer (or a wrapper with .optimizer), got "
                           f"{type(seen).__name__}", "pass the optimizer that steps the model's parameters")
    return optimizer


def _decay(lr: float, weight_decay: float) -> float:
    """-log(1 - lr lambda): the integrated decay of one SGD step, which undoes theta <- (1 - lr lambda) theta."""
    if lr * weight_decay >= 1:
        raise ConslawError(f"lr * weight_decay = {lr * weight_decay:g} >= 1: the step zeroes or flips the parameters "
                           "and Thm 2.1's correction is undefined", "use lr * weight_decay < 1")
    return -math.log1p(-lr * weight_decay)


class LawMonitor:
    """Track the conservation laws of ``model`` during training.

    Records h(theta_k) of every law after each (or every ``every_n_steps``-th) optimizer step, with the
    weight-decay correction of Thm 2.1, and reports the scale-aware relative errors
    |h_k - h_0| / max(|h_0|, scale of the law's terms) (module docstring), Frobenius errors of matrix laws,
    the loss, and Prop 5.1's bound C_h C_L / 2 sum tau_i^2 (eq. 27).

    Usage::

        laws = conslaw.find_laws(model, x, "cross_entropy").exact()
        monitor = conslaw.LawMonitor(model, laws, every_n_steps=10)
        monitor.attach(optimizer)        # or monitor.step(lr=..., loss=...) after each update
        ...
        monitor.relative_errors(); monitor.plot("laws.png"); monitor.log_to(summary_writer)

    Args:
        model: the model being trained (a ``torch.compile``d model is unwrapped to its original module).
        laws: its laws (``find_laws(model).exact()``, a catalog's, or your own).
        weight_decay: lambda (or lambda(k)) for manual ``step(lr=...)`` calls on all parameters; with an
            optimizer (``attach`` or ``step(optimizer=...)``) each parameter group's own ``weight_decay`` is used.
        groups: extra Frobenius groups: name -> law indices.
        space: the parameter layout (default: the model's trainable parameters).
        estimate_constants: measure |grad|^2 at the recorded steps for Prop 5.1's C_L.
        every_n_steps: record after every n-th optimizer step (the decay and step sizes still accumulate
            at every step).
    """

    def __init__(self, model: nn.Module, laws: Sequence[Law], weight_decay: float | Callable[[int], float] = 0.0,
                 groups: dict[str, list[int]] | None = None, space: ParamSpace | None = None,
                 estimate_constants: bool = True, every_n_steps: int = 1) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ConslawError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}",
                               "use 1 to record every step, or e.g. 100 for long runs")
        self.model = unwrap_model(model)
        self.space = space or ParamSpace.from_module(self.model)
        self.laws = [getattr(law, "law", law) for law in laws]  # CheckedLaw -> its Law
        if not self.laws:
            raise ConslawError("LawMonitor needs at least one law", "pass the laws of find_laws(model) or a catalog")
        for law in self.laws:
            missing = [p for p in law.params if p not in self.space.shapes]
            if missing:
                raise ConslawError(f"law {law.name!r} uses parameters {missing} that {type(self.model).__name__} "
                                   "does not have", "monitor the laws found for this very model")
        self.every_n_steps = every_n_steps
        self._weight_decay_arg = weight_decay
        self.weight_decay = weight_decay if callable(weight_decay) else (lambda k, wd=weight_decay: wd)
        #: Frobenius groups: the entries of every matrix law (weights 2 off the diagonal), and ``groups``
        self.groups = {**matrix_groups(self.laws),
                       **{name: (list(idx), np.ones(len(idx))) for name, idx in (groups or {}).items()}}
        #: measure |grad|^2 at every recorded step for C_L of Prop 5.1 (one more pass over the gradients)
        self.estimate_constants = estimate_constants
        self.evaluator = LawEvaluator(self.model, self.laws, self.space)
        self._values = History(len(self.laws))
        self._corrected: History | None = None  # allocated when weight decay first accumulates
        self._scalars = History(4)
        #: integrated weight decay per parameter name (Thm 2.1): h is corrected at theta_k e^{Lambda_k}
        self.Lambda: dict[str, float] = dict.fromkeys(self.space.names, 0.0)
        #: optimizer steps seen, and sum of tau_i^2 over them
        self.steps = 0
        self._tau2 = 0.0
        self._pending_loss: Any = None
        self._denominator = np.zeros(len(self.laws))
        self._attached: tuple[torch.optim.Optimizer, Callable] | None = None
        self._checked: set[int] = set()
        self.record()

    def __repr__(self) -> str:
        return (f"LawMonitor({len(self.laws)} laws of {type(self.model).__name__}, {len(self._values)} records, "
                f"{self.steps} steps, every {self.every_n_steps})")

    # ---- recorded history (read-only views) ----------------------------------------------------------------

    @property
    def values(self) -> np.ndarray:
        """(records, laws): h(theta_k) at every record (read-only view)."""
        return self._values.data

    @property
    def corrected(self) -> np.ndarray:
        """(records, laws): h(theta_k e^{Lambda_k}) (Thm 2.1); the values themselves while no decay accumulated."""
        return self.values if self._corrected is None else self._corrected.data

    @property
    def losses(self) -> np.ndarray:
        """The loss at every record (NaN where none was given)."""
        return self._scalars.data[:, _LOSS]

    @property
    def recorded_steps(self) -> np.ndarray:
        """The optimizer step of every record (0: the initial parameters)."""
        return self._scalars.data[:, _STEP].astype(int)

    @property
    def grad_sq(self) -> np.ndarray:
        """|grad L|^2 measured at every record after the first (NaN where no gradient was there)."""
        return self._scalars.data[1:, _GRAD_SQ]

    def theta(self) -> torch.Tensor:
        """The model's current parameters as one flat float64 CPU vector (ParamSpace order)."""
        return self.evaluator.theta()

    # ---- recording --------------------------------------------------------------------------------------------

    def _factors(self) -> dict[str, float] | None:
        """e^{Lambda} per parameter, or None while no decay has accumulated."""
        return {n: math.exp(lam) for n, lam in self.Lambda.items()} if any(self.Lambda.values()) else None

    def set_loss(self, loss: float | torch.Tensor) -> None:
        """The loss of the coming step, stored with it if that step is recorded (for ``attach``: call before
        ``optimizer.step()``).

        A tensor is kept as is and read (``float``) only when a record is made, so that steps that are not
        recorded cost no device synchronisation.
        """
        self._pending_loss = loss.detach() if isinstance(loss, torch.Tensor) else loss

    def set_last_loss(self, loss: float | torch.Tensor) -> None:
        """Set the loss of the newest record (for callbacks that learn the loss only after the step)."""
        self._scalars.set_last(_LOSS, float(loss.detach() if isinstance(loss, torch.Tensor) else loss))

    def record(self, loss: float | torch.Tensor | None = None, grad_sq: float = math.nan) -> None:
        """Record the laws' values (plain and weight-decay corrected) now, with ``loss`` (or the one set by
        :meth:`set_loss`)."""
        loss = self._pending_loss if loss is None else loss
        self._pending_loss = None
        factors = self._factors()
        need_scale = len(self._values) == 0 or not self._denominator.all()
        values, scale = self.evaluator(None, with_scale=need_scale and factors is None)
        corrected = values
        if factors is not None:
            corrected, scale = self.evaluator(factors, with_scale=need_scale)
            if self._corrected is None:  # decay appears: earlier records were uncorrected (Lambda = 0)
                self._corrected = History(len(self.laws), self._values.capacity)
                for row in self._values.data:
                    self._corrected.append(row)
        if scale is not None:
            if len(self._values) == 0:
                self._denominator = np.maximum(np.abs(values), scale)
                zero = self._denominator == 0
                if zero.any():  # terms all exactly 0 at theta_0 (zero-initialised parameters): the typical size
                    self._denominator[zero] = self._typical_scale(zero)
            else:
                zero = self._denominator == 0
                self._denominator[zero] = scale[zero]
        loss_value = math.nan if loss is None else float(loss)
        if not np.all(np.isfinite(values)) or not (loss is None or math.isfinite(loss_value)):
            warnings.warn(f"non-finite law value or loss at step {self.steps}: recorded as is; "
                          "the training code decides what to do", RuntimeWarning, stacklevel=2)
        self._values.append(values)
        if self._corrected is not None:
            self._corrected.append(corrected)
        self._scalars.append(np.array([self.steps, loss_value, self._tau2, grad_sq]))

    def step(self, lr: float | None = None, loss: float | torch.Tensor | None = None,
             optimizer: torch.optim.Optimizer | None = None) -> None:
        """Count one update of a manual loop, and record it (every ``every_n_steps``-th).

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
        if loss is not None:
            self.set_loss(loss)
        self._advance(lr, None if optimizer is None else unwrap_optimizer(optimizer))

    def _advance(self, lr: float | None, optimizer: torch.optim.Optimizer | None) -> None:
        """Accumulate the decay of one step (per parameter) and the step size; record every n-th step."""
        if optimizer is not None:
            self._check_optimizer(optimizer)
            rates = self._group_rates(optimizer)
            for name, (group_lr, group_wd) in rates.items():
                if group_wd:
                    self.Lambda[name] += _decay(group_lr, group_wd)
            if lr is None and rates:
                lr = max(group_lr for group_lr, _ in rates.values())
        else:
            lam = float(self.weight_decay(self.steps))
            if lam and lr is None:
                raise ConslawError("with weight decay the monitor needs the step size",
                                   "call monitor.step(lr=...), or monitor.step(optimizer=opt)")
            if lam and lr is not None:
                increment = _decay(lr, lam)
                for name in self.Lambda:
                    self.Lambda[name] += increment
        self.steps += 1
        self._tau2 = math.nan if lr is None else self._tau2 + float(lr) ** 2
        if self.steps % self.every_n_steps == 0:
            self.record(grad_sq=self._grad_sq() if self.estimate_constants else math.nan)
        self._pending_loss = None  # a loss belongs to its own step only

    def _grad_sq(self) -> float:
        """|grad L|^2 over the monitored parameters' current gradients (NaN when there are none)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return math.nan
        device = grads[0].device
        return float(sum(torch.linalg.vector_norm(g, dtype=DTYPE).to(device) ** 2 for g in grads))

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

    def attach(self, optimizer: Any) -> Callable[[], None]:
        """Record after every (n-th) ``optimizer.step()`` (per-group lr and weight decay); returns the remover.

        ``optimizer`` may be a wrapper with the torch optimizer in ``.optimizer`` (accelerate, Lightning): the
        hook goes on the torch optimizer, whose ``step`` the wrapper calls only for real updates (not for
        accumulation micro-batches nor for steps an AMP scaler skips). Idempotent: attaching the same optimizer
        again does nothing and returns the same remover.

        Raises:
            ConslawError: the monitor is already attached to another optimizer, or ``optimizer`` holds no
                torch optimizer.
        """
        optimizer = unwrap_optimizer(optimizer)
        if self._attached is not None:
            if self._attached[0] is optimizer:
                return self._attached[1]
            raise ConslawError("this monitor is already attached to another optimizer: both would record every step",
                               "call the function that the first attach() returned, or use one monitor per "
                               "optimizer")
        self._check_optimizer(optimizer)

        def hook(opt, args, kwargs):
            self._advance(None, opt)

        handle = optimizer.register_step_post_hook(hook)

        def remove() -> None:
            handle.remove()
            if self._attached is not None and self._attached[1] is remove:
                self._attached = None

        self._attached = (optimizer, remove)
        return remove

    # ---- results ----------------------------------------------------------------------------------------------

    def _typical_scale(self, which: np.ndarray) -> np.ndarray:
        """For the laws ``which``: the scale of their terms on parameters of the model's typical size.

        sum_t |c_t| rho^2 + sum_s |l_s| rho, rho the root mean square of all parameters at theta_0: the scale a
        law on zero-initialised parameters (a bias, a zero head) is measured against, so that round-off
        (1e-19 on BERT's zero key biases) reads as round-off and not as a 100 % change. 0 for a law given
        only by a function, or when every parameter is 0; such a law takes its scale from the first record
        where its terms are not all zero.
        """
        with torch.no_grad():
            flat = [p.detach().double().reshape(-1) for p in self.model.parameters()]
            total = sum(float(f.square().sum()) for f in flat)
            count = sum(f.numel() for f in flat)
        rho = math.sqrt(total / count) if count else 0.0
        out = np.zeros(int(which.sum()))
        for k, i in enumerate(np.flatnonzero(which)):
            law = self.laws[i]
            if isinstance(law, QuadraticLaw):
                quad = float(law.quad[2].abs().sum()) if law.quad is not None else 0.0
                lin = float(law.lin[1].abs().sum()) if law.lin is not None else 0.0
                out[k] = quad * rho ** 2 + lin * rho
        return out

    def _errors(self, vals: np.ndarray, h0: np.ndarray) -> np.ndarray:
        """Scale-aware errors of the rows ``vals`` (laws, then Frobenius groups)."""
        den = self._denominator
        diff = np.abs(vals - h0)
        per_law = np.divide(diff, den, out=diff.copy(), where=den > 0)
        cols = [per_law]
        for idx, weights in self.groups.values():
            stacked = np.vstack([h0[idx], vals[..., idx].reshape(-1, len(idx))])
            cols.append(frobenius_error(stacked, weights, den[idx])[1:].reshape(*vals.shape[:-1], 1))
        return np.concatenate(cols, axis=-1)

    def relative_errors(self, corrected: bool = True) -> np.ndarray:
        """(records, laws + groups): |h_k - h_0| / max(|h_0|, scale of terms) per law, then Frobenius per group."""
        vals = self.corrected if corrected else self.values
        return self._errors(vals, vals[0])

    def last_errors(self, corrected: bool = True) -> np.ndarray:
        """The newest row of :meth:`relative_errors`, in O(laws) whatever the number of records."""
        vals = self.corrected if corrected else self.values
        return self._errors(vals[-1:], vals[0])[0]

    @property
    def columns(self) -> list[str]:
        """Column names of :meth:`relative_errors`: one per law, then one per Frobenius group."""
        return [law.name for law in self.laws] + [f"{g} (Frobenius)" for g in self.groups]

    @property
    def column_families(self) -> list[str]:
        """The law family of every column (``matrix`` for Frobenius groups, ``other`` when undeclared)."""
        return [law.family or "other" for law in self.laws] + ["matrix"] * len(self.groups)

    def prop51_bound(self, c_h: float = 2.0) -> np.ndarray:
        """C_h C_L / 2 sum_{i<k} tau_i^2 (eq. 27) at every record, with C_L the running mean of |grad L_Z|^2
        (eq. 26) over the recorded steps.

        Raises:
            ConslawError: no step size or no gradient was seen.
        """
        scalars = self._scalars.data
        tau2, gsq = scalars[1:, _TAU2], scalars[1:, _GRAD_SQ]
        if not len(tau2) or np.isnan(tau2).any() or np.isnan(gsq).all():
            raise ConslawError("the bound needs step sizes and gradients",
                               "call step(lr=...) after backward(), or attach(optimizer)")
        seen = np.cumsum(~np.isnan(gsq))
        c_l = np.cumsum(np.nan_to_num(gsq)) / np.maximum(seen, 1)
        return np.r_[0.0, c_h * c_l / 2 * tau2]

    def summary(self, corrected: bool = True) -> dict[str, float]:
        """Newest record: worst relative error per law family (``family/<name>``) and overall (``worst``)."""
        errors = self.last_errors(corrected)
        out: dict[str, float] = {}
        for family, err in zip(self.column_families, errors, strict=True):
            key = f"family/{family}"
            out[key] = max(out.get(key, 0.0), float(err))
        out["worst"] = float(np.max(errors))
        return out

    def table(self) -> list[dict]:
        """One row per record: step, loss, and every column's relative error."""
        errors, steps = self.relative_errors(), self.recorded_steps
        return [{"step": int(steps[k]), "loss": float(self.losses[k]),
                 **dict(zip(self.columns, map(float, errors[k]), strict=True))} for k in range(len(errors))]

    def to_csv(self, path: str) -> None:
        """Write :meth:`table` as CSV to ``path`` (atomically)."""
        rows = self.table()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, text.getvalue())

    def to_json(self, path: str) -> None:
        """Write the laws, steps, values, corrected values, losses and relative errors as JSON (NaN: null)."""
        atomic_write(path, dumps_json({"laws": [law.name for law in self.laws], "steps": self.recorded_steps,
                                       "values": self.values, "corrected": self.corrected, "losses": self.losses,
                                       "Lambda": self.Lambda, "relative_errors": self.relative_errors()}))

    def plot(self, path: str | None = None, max_lines: int = 8):
        """Relative errors (log scale) and losses against steps, as a matplotlib ``Figure``
        (:func:`conslaw.monitor_plot.plot_monitor`); also written to ``path`` when given."""
        from .monitor_plot import plot_monitor

        return plot_monitor(self, path, max_lines)

    def log_to(self, writer: Any, step: int | None = None) -> dict[str, float]:
        """Log the newest record to a TensorBoard ``SummaryWriter`` or a W&B run
        (:func:`conslaw.monitor_log.log_to`); returns the scalars logged."""
        from .monitor_log import log_to

        return log_to(self, writer, step)
