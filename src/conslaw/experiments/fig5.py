"""Figure 5: a Transformer on IMDb trained by SGD; Q Q^T - K K^T of the first head of the first layer.

Protocol (Sec 5.2, App O Fig 5): SGD without momentum or weight decay, learning rates 1e-3 .. 5e-3,
8 seeds, 50 steps, with and without a (causal) attention mask. Tracked: the Frobenius relative error
of the matrix Q_h Q_h^T - K_h K_h^T (biases appended, Cor 3.10) of head 0, layer 0, and a control,
|Q_h|^2 + |b_q|^2 (not conserved). The paper does not state the Transformer's sizes, the batch or the
dtype. ``quick``: E = 16, 2 heads, 32 tokens, 2 seeds, 3 learning rates, 10 steps.
Without ``--data``, SYNTHETIC token sequences stand in for IMDb.

Every run is trained twice, in float32 (PyTorch's default, presumably the paper's) and in float64: at
the paper's learning rates the law moves by about 1e-7 .. 1e-5 relative, while float32 rounding of
the weights alone moves it by about 1e-7, which can hide the lr^2 slope. The claims rest on float64
(the rounding-free check of eq. 27); the float32 exponents are measured and reported beside them,
and the output says when float32 rounding hides the slope. The laws are found once per architecture
(masked, unmasked) and reused by every (dtype, lr, seed) run. Runs are content-addressed and written
atomically, as for Figure 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write, dumps_json, ensure_dir
from ..laws import QuadraticLaw, unit_slot
from ..models import TransformerClassifier
from ..monitor import frobenius_error, matrix_groups
from ..nn import MHALayout, find_laws
from ..nn.attention import QK
from ..params import ParamSpace
from .executor import Job, run_jobs, torch_threads
from .fidelity import figure_deviations, finish_figure, protocol_record
from .fig1 import check_device
from .protocol import EXPONENT_TOLERANCE, RunCache, RunSchema, conslaw_version, exponent_claims, fit_exponent
from .training import init_model, train_monitored

#: the training dtypes of every run; the claims rest on the second
DTYPES = ("float32", "float64")


def head_laws(model, tokens):
    """The entries of Q_0 Q_0^T - K_0 K_0^T of layer 0 (biases appended), and the control |Q_0|^2 + |b_q|^2."""
    found = find_laws(model, tokens[:2], "cross_entropy", numeric=False, batches=2)
    attn = model.encoder.layers[0].self_attn
    name = next(n for n, m in model.named_modules() if m is attn)
    laws = [c.law for c in found.select(family="attention", module=name, head=0, matrix=QK)]
    layout = MHALayout.of(name, attn)
    space = ParamSpace.from_module(model)
    rows, bias_rows = layout.rows("q", 0)
    slots = [unit_slot(space, layout.weight("q")[0], 0, rows), unit_slot(space, layout.bias, 0, bias_rows)]
    control = QuadraticLaw.inner_difference("control: |Q_0|^2 + |b_q|^2", "|Q_0|^2 + |b_q|^2",
                                            tuple(s.name for s in slots), plus=[(s.index, s.index) for s in slots],
                                            minus=[], origin="control")
    return laws, control


def build_model(shape: tuple, masked: bool, seed: int, device: str = "cpu", dtype: str = "float64"):
    """The Transformer classifier of Figure 5 seeded with ``seed`` (float32 init), on ``device`` in ``dtype``."""
    vocab, length, dim, heads, hidden = shape
    return init_model(lambda: TransformerClassifier(vocab, length, dim, heads, hidden, 1, 2, causal=masked), seed,
                      device, getattr(torch, dtype))


_LAWS: dict[tuple, tuple] = {}


def architecture_laws(shape: tuple, masked: bool, tokens):
    """(laws, control) of the architecture: found once (seed 0, float64) and reused by every run."""
    key = (shape, masked)
    if key not in _LAWS:
        _LAWS[key] = head_laws(build_model(shape, masked, 0), tokens)
    return _LAWS[key]


def one_run(lr: float, seed: int, masked: bool, shape: tuple, tokens, labels, steps: int, batch: int,
            dtype: str = "float64", device: str = "cpu") -> dict:
    """One SGD run of Figure 5 (masked or not) at learning rate ``lr`` from seed ``seed``, trained in ``dtype``."""
    model = build_model(shape, masked, seed, device, dtype)
    laws, control = architecture_laws(shape, masked, tokens)
    (_, weights), = matrix_groups(laws).values()
    monitor = train_monitored(model, [*laws, control], tokens, labels, lr, steps, batch, seed, device=device)
    values = np.array(monitor.values)
    return {"masked": masked, "lr": lr, "seed": seed,
            "errors_law": frobenius_error(values[:, :-1], weights).tolist(),
            "errors_control": (np.abs(values[:, -1] - values[0, -1]) / abs(values[0, -1])).tolist(),
            "losses": monitor.losses[1:]}


def run_schema(steps: int) -> RunSchema:
    """What a Figure 5 run record holds: masked, lr, seed, errors (steps + 1 each), losses (steps)."""
    return RunSchema(scalars={"masked": bool, "lr": (float, int), "seed": int},
                     lists={"errors_law": steps + 1, "errors_control": steps + 1, "losses": steps})


def sizes(quick: bool) -> dict:
    """Model sizes, seeds, steps, batch and learning rates of the quick and the full protocol."""
    if quick:
        return {"dim": 16, "heads": 2, "hidden": 32, "length": 32, "seeds": 2, "steps": 10, "batch": 16,
                "lrs": [1e-3, 2.5e-3, 5e-3], "limit": 2000}
    return {"dim": 64, "heads": 4, "hidden": 128, "length": 64, "seeds": 8, "steps": 50, "batch": 32,
            "lrs": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3], "limit": None}


def summarize(runs: list[dict], lrs: list[float]) -> dict:
    """Per mask: fitted exponents and mean final errors of the law and the control."""
    by_mask = {}
    for masked in (False, True):
        sub = [r for r in runs if r["masked"] == masked]
        final = {n: [float(np.mean([r[f"errors_{n}"][-1] for r in sub if r["lr"] == lr])) for lr in lrs]
                 for n in ("law", "control")}
        by_mask["masked" if masked else "unmasked"] = {
            "exponent_conserved": fit_exponent(lrs, final["law"]),
            "exponent_control": fit_exponent(lrs, final["control"]),
            "final_error_law": final["law"], "final_error_control": final["control"]}
    return by_mask


def float32_note(by_dtype: dict) -> tuple[bool, str]:
    """(float32 shows the slopes, one sentence saying so or saying that rounding hides the lr^2 slope)."""
    f32, f64 = by_dtype["float32"], by_dtype["float64"]
    ok = all(abs(f32[k]["exponent_conserved"] - 2) <= EXPONENT_TOLERANCE and
             abs(f32[k]["exponent_control"] - 1) <= EXPONENT_TOLERANCE for k in f32)
    exps = ", ".join(f"{k} law {f32[k]['exponent_conserved']:.2f} / control {f32[k]['exponent_control']:.2f}"
                     for k in f32)
    exps64 = ", ".join(f"{k} law {f64[k]['exponent_conserved']:.2f}" for k in f64)
    if ok:
        return True, f"float32 training shows the slopes too ({exps}); float64: {exps64}"
    smallest = min(min(v["final_error_law"]) for v in f32.values())
    return False, (f"float32 rounding hides the lr^2 slope at these learning rates: float32 exponents {exps} "
                   f"(smallest mean law error {smallest:.1e}, near float32's relative rounding 6e-8 accumulated "
                   f"over the steps); the claims rest on float64 ({exps64}), drawn beside float32 in the figure")


def run(quick: bool = True, data: str | None = None, out: str = "results", progress: bool = True,
        device: str = "cpu", executor: str = "local", ray_address: str | None = None,
        threads: int | None = None) -> dict:
    """Figure 5: every (dtype, mask, seed, lr) run (cached), fitted exponents, claims, protocol, figure, JSON."""
    with torch_threads(threads if threads is not None else (1 if quick else None)):
        return _run(quick, data, out, progress, device, executor, ray_address)


def _run(quick: bool = True, data: str | None = None, out: str = "results", progress: bool = True,
         device: str = "cpu", executor: str = "local", ray_address: str | None = None) -> dict:
    """The body of :func:`run` (under its thread setting)."""
    check_device(device)
    out_dir = Path(out) / "fig5"
    ensure_dir(out_dir / "runs")
    size = sizes(quick)
    dim, heads, hidden, length = size["dim"], size["heads"], size["hidden"], size["length"]
    seeds, steps, batch, lrs, limit = size["seeds"], size["steps"], size["batch"], size["lrs"], size["limit"]
    if data:
        from ..data.imdb import fingerprint, load_imdb
        source = f"{fingerprint(data)}:limit{limit}"
        tokens, labels, vocab = load_imdb(data, length=length, limit=limit)
        synthetic = False
    else:
        from ..data.imdb import synthetic_imdb
        tokens, labels, vocab = synthetic_imdb(2048, 200, length)
        source, synthetic = "synthetic:imdb:n2048:vocab200:seed0", True
    shape = (len(vocab), length, dim, heads, hidden)
    common = {"experiment": "fig5", "protocol": "quick" if quick else "full",
              "model": {"dim": dim, "heads": heads, "hidden": hidden, "length": length, "vocab": len(vocab)},
              "data": source, "steps": steps, "batch": batch, "device": device, "version": conslaw_version()}
    cache, schema = RunCache(out_dir / "runs"), run_schema(steps)
    for masked in (False, True):
        architecture_laws(shape, masked, tokens)  # found once, before the runs (and before Ray ships them)
    jobs = []
    for dtype in DTYPES:
        for masked in (False, True):
            for seed in range(seeds):
                for lr in lrs:
                    stem = f"{dtype}_{'masked' if masked else 'unmasked'}_lr{lr:g}_seed{seed}"
                    inputs = {**common, "dtype": f"torch.{dtype}", "masked": masked, "lr": lr, "seed": seed}
                    jobs.append(Job(stem, inputs, one_run,
                                    (lr, seed, masked, shape, tokens, labels, steps, batch, dtype, device)))
    done = run_jobs(cache, schema, jobs, "fig5 runs", progress, executor, ray_address)
    runs = {dtype: [r for r, j in zip(done, jobs, strict=True) if j.inputs["dtype"] == f"torch.{dtype}"]
            for dtype in DTYPES}
    by_dtype = {dtype: summarize(runs[dtype], lrs) for dtype in DTYPES}
    by_mask = by_dtype["float64"]
    float32_shows, note = float32_note(by_dtype)
    laws, _ = architecture_laws(shape, False, tokens)
    result = {"experiment": "fig5", "synthetic": synthetic, "data": source, "runs": len(done), **cache.counts(),
              "learning_rates": lrs, "seeds": seeds, "steps": steps, "batch": batch,
              "exponent_conserved": by_mask["unmasked"]["exponent_conserved"],
              "exponent_control": by_mask["unmasked"]["exponent_control"], "by_mask": by_mask,
              "by_dtype": by_dtype, "claims_dtype": "torch.float64", "float32_shows_slope": float32_shows,
              "figure": str(out_dir / "fig5.png"), "results": str(out_dir / "fig5.json")}
    result["protocol_record"] = protocol_record(
        model=f"Transformer encoder classifier: 1 layer, E = {dim}, {heads} heads, MLP {hidden}, {length} tokens, "
              f"vocabulary {len(vocab)}; masked (causal) and unmasked",
        data="SYNTHETIC token sequences (2048, seed 0)" if synthetic else f"IMDb ({source})",
        law="Q_0 Q_0^T - K_0 K_0^T (layer 0, head 0, biases appended; Cor 3.10), Frobenius relative error",
        law_formula=f"{len(laws)} entries, e.g. {laws[0].formula}", learning_rates=lrs, seeds=seeds, steps=steps,
        batch=batch, dtype="torch.float32 and torch.float64 (claims: float64)", device=device)
    result["deviations"] = figure_deviations("fig5", synthetic=synthetic, learning_rates=lrs, seeds=seeds,
                                             steps=steps, dtypes=["torch.float64"])
    result["notes"] = [note]
    result["claims"] = [row for key, r in by_mask.items() for row in exponent_claims(
        f"Fig 5 ({key}): |QQ^T - KK^T| error ~ lr^2", f"Fig 5 ({key}): control ~ lr",
        r["exponent_conserved"], r["exponent_control"])]
    plot(runs, lrs, result["figure"], result)
    atomic_write(result["results"], dumps_json(result, indent=1))
    return result


def plot(runs: dict, lrs, path, result) -> None:
    """Frobenius relative error of Q Q^T - K K^T against steps, float32 (top) and float64 (middle), masked and
    unmasked side by side, with the C k tau^2 guide lines; float64 losses below; protocol in the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(10, 8.5), sharex=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(lrs)))
    for row, dtype in enumerate(DTYPES):
        for col, masked in enumerate((False, True)):
            sub = [r for r in runs[dtype] if r["masked"] == masked]
            ratios = [np.asarray(r["errors_law"][1:]) / (np.arange(1, len(r["errors_law"])) * r["lr"] ** 2)
                      for r in sub]
            c = float(np.median(np.concatenate(ratios)))
            ax = axes[row, col]
            for lr, color in zip(lrs, colors, strict=True):
                errs = np.mean([r["errors_law"] for r in sub if r["lr"] == lr], axis=0)
                steps = np.arange(1, len(errs))
                ax.semilogy(steps, np.maximum(errs[1:], 1e-18), color=color, label=f"lr={lr:g}")
                ax.semilogy(steps, c * steps * lr ** 2, ":", color=color)
                if row == 1:
                    losses = np.mean([r["losses"] for r in sub if r["lr"] == lr], axis=0)
                    axes[2, col].plot(steps, losses, color=color)
            p = result["by_dtype"][dtype]["masked" if masked else "unmasked"]["exponent_conserved"]
            ax.set_title(f"{dtype}, {'masked' if masked else 'unmasked'}: exponent {p:.2f}"
                         + (" (SYNTHETIC data)" if result["synthetic"] else " (IMDb)"), fontsize=9)
        axes[row, 0].set_ylabel(f"|H_k - H_0|_F / |H_0|_F ({dtype})", fontsize=8)
    axes[2, 0].set_ylabel("loss (float64)")
    for col in range(2):
        axes[2, col].set_xlabel("step")
    axes[0, 0].legend(fontsize=7)
    finish_figure(fig, result, path, width=170)
