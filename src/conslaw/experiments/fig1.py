"""Figure 1 / 4: ResNet-18 on CIFAR-10 trained by SGD; the law of the first residual block ~ lr^2.

Protocol (Sec 5.2): SGD without momentum or weight decay, learning rates 1e-3 .. 5e-3, 10 seeds,
50 steps; track h = sum_j h_j over the channels of the first residual block (eq. 17; with BatchNorm
the block's law is |conv2.weight[:,j]|^2 - gamma_j^2 - beta_j^2 of its inner BatchNorm) and, as a
control, the same sum with + instead of -. ``quick``: width 8 instead of 64, 2 seeds, 3 learning
rates, 10 steps. The control is |fc.weight|^2 (with BatchNorm after every convolution, sums of norms
inside the block are conserved to first order too, so they cannot serve as a control).
Every finished run is written at once (atomically); a rerun resumes. Runs are content-addressed
(:class:`~conslaw.experiments.protocol.RunCache`): a run is reused only when its key (experiment,
protocol size, width, data fingerprint, lr, seed, steps, batch, dtype, conslaw version) matches and
its record validates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..io import atomic_write, dumps_json, ensure_dir, save_figure
from ..laws import QuadraticLaw, sum_of_laws, unit_slot
from ..models import resnet18_cifar, seeded
from ..nn import find_laws
from ..params import ParamSpace
from .protocol import RunCache, RunSchema, conslaw_version, exponent_claims, fit_exponent
from .training import train_monitored


def block_laws(model) -> tuple[QuadraticLaw, QuadraticLaw]:
    """The law h = sum_j h_j of the first residual block (exact, BatchNorm ResNet) and the control |fc.weight|^2."""
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    found = find_laws(model, example, "cross_entropy", numeric=False, batches=2)
    bn1 = next(name for name, m in model.named_modules() if m is model.layers[0][0].bn1)
    laws = [c.law for c in found.select(family="rescaling", module=bn1)]
    h = sum_of_laws(laws, "h = sum_j h_j (first residual block)")
    # control: |fc.weight|^2, moved at first order by SGD. (Sums of norms inside the block are no control
    # here: every convolution feeds a BatchNorm, so their norms are conserved to first order, and the
    # BatchNorm gammas and betas barely move at initialization.)
    fc = unit_slot(ParamSpace.from_module(model), "fc.weight", 0, slice(0, model.fc.out_features))
    control = QuadraticLaw.inner_difference("control: |fc.weight|^2", "|fc.weight|^2", ("fc.weight",),
                                            plus=[(fc.index, fc.index)], minus=[], origin="control")
    return h, control


def one_run(lr: float, seed: int, width: int, images, labels, steps: int, batch: int) -> dict:
    """One SGD run of Figure 1 at learning rate ``lr`` from seed ``seed``: relative errors and losses."""
    model = seeded(lambda: resnet18_cifar(width=width), seed)
    h, control = block_laws(model)
    monitor = train_monitored(model, [h, control], images, labels, lr, steps, batch, seed)
    errors = monitor.relative_errors()
    return {"lr": lr, "seed": seed, "errors_law": errors[:, 0].tolist(), "errors_control": errors[:, 1].tolist(),
            "losses": monitor.losses[1:]}


def run_schema(steps: int) -> RunSchema:
    """What a Figure 1 run record holds: lr, seed, errors of the law and the control (steps + 1), losses (steps)."""
    return RunSchema(scalars={"lr": (float, int), "seed": int},
                     lists={"errors_law": steps + 1, "errors_control": steps + 1, "losses": steps})


def run(quick: bool = True, data: str | None = None, out: str = "results", progress: bool = True) -> dict:
    """Figure 1: every (seed, lr) run (cached), fitted exponents, claims, figure and JSON."""
    out_dir = Path(out) / "fig1"
    ensure_dir(out_dir / "runs")
    width, seeds, steps, batch = (8, 2, 10, 16) if quick else (64, 10, 50, 128)
    lrs = [1e-3, 2.5e-3, 5e-3] if quick else [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]
    if data:
        from ..data.cifar import fingerprint, load_cifar10
        source = fingerprint(data)
        images, labels = load_cifar10(data)
        synthetic = False
    else:
        from ..data.cifar import synthetic_cifar10
        images, labels = synthetic_cifar10(2048)
        source, synthetic = "synthetic:cifar10:n2048:seed0", True
    common = {"experiment": "fig1", "protocol": "quick" if quick else "full", "model": {"width": width},
              "data": source, "steps": steps, "batch": batch, "dtype": str(torch.get_default_dtype()),
              "version": conslaw_version()}
    cache, schema = RunCache(out_dir / "runs"), run_schema(steps)
    runs = []
    for seed in tqdm(range(seeds), desc="fig1 seeds", disable=not progress):
        for lr in lrs:
            runs.append(cache.run(f"lr{lr:g}_seed{seed}", {**common, "lr": lr, "seed": seed}, schema,
                                  lambda lr=lr, seed=seed: one_run(lr, seed, width, images, labels, steps, batch)))
    final = {name: [float(np.mean([r[f"errors_{name}"][-1] for r in runs if r["lr"] == lr])) for lr in lrs]
             for name in ("law", "control")}
    result = {"experiment": "fig1", "synthetic": synthetic, "data": source, "runs": len(runs), **cache.counts(),
              "learning_rates": lrs, "seeds": seeds, "steps": steps, "width": width, "batch": batch,
              "exponent_conserved": fit_exponent(lrs, final["law"]),
              "exponent_control": fit_exponent(lrs, final["control"]),
              "final_error_law": final["law"], "final_error_control": final["control"],
              "figure": str(out_dir / "fig1.png"), "results": str(out_dir / "fig1.json")}
    plot(runs, lrs, result["figure"], synthetic)
    result["claims"] = exponent_claims("Fig 1: law error ~ lr^2 (ResNet-18, SGD)", "Fig 1: control error ~ lr",
                                       result["exponent_conserved"], result["exponent_control"])
    atomic_write(result["results"], dumps_json(result, indent=1))
    return result


def plot(runs, lrs, path, synthetic) -> None:
    """Relative error of the law against steps per learning rate, with the C k tau^2 guide lines; losses below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True)
    # one constant C for all learning rates: the dotted lines are C k tau^2 (eq. 27 with constant steps)
    ratios = [np.asarray(r["errors_law"][1:]) / (np.arange(1, len(r["errors_law"])) * r["lr"] ** 2) for r in runs]
    c = float(np.median(np.concatenate(ratios)))
    for lr, color in zip(lrs, plt.cm.viridis(np.linspace(0, 0.9, len(lrs))), strict=True):
        errs = np.mean([r["errors_law"] for r in runs if r["lr"] == lr], axis=0)
        losses = np.mean([r["losses"] for r in runs if r["lr"] == lr], axis=0)
        steps = np.arange(len(errs))
        top.semilogy(steps[1:], errs[1:], color=color, label=f"lr={lr:g}")
        top.semilogy(steps[1:], c * steps[1:] * lr ** 2, ":", color=color)
        bottom.plot(np.arange(1, len(losses) + 1), losses, color=color)
    top.set_ylabel("|h(θ_k) - h(θ_0)| / |h(θ_0)|")
    top.set_title("ResNet-18, first residual block" + (" (SYNTHETIC data)" if synthetic else " (CIFAR-10)"))
    top.legend(fontsize=7)
    bottom.set_ylabel("loss")
    bottom.set_xlabel("step")
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
