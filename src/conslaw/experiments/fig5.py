"""Figure 5: a Transformer on IMDb trained by SGD; Q Q^T - K K^T of the first head of the first layer.

Same protocol as Figure 1 (SGD, no momentum or weight decay, several learning rates and seeds), with
and without a (causal) attention mask. Tracked: the Frobenius relative error of the matrix
Q_h Q_h^T - K_h K_h^T (biases appended, Cor 3.10) of head 0, layer 0, and a control, |Q_h|^2 + |b_q|^2
(not conserved). ``quick``: E = 16, 2 heads, 32 tokens, 2 seeds, 3 learning rates, 10 steps.
Without ``--data``, SYNTHETIC token sequences stand in for IMDb. Training runs in float64: at these
learning rates the law moves by 1e-7 .. 1e-5 relative, and float32 rounding alone moves it by about 1e-7.
Runs are content-addressed and written atomically, as for Figure 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_write, dumps_json, ensure_dir, save_figure
from ..laws import QuadraticLaw, unit_slot
from ..models import TransformerClassifier, seeded
from ..monitor import frobenius_error, matrix_groups
from ..nn import MHALayout, find_laws
from ..nn.attention import QK
from ..params import ParamSpace
from .protocol import RunCache, RunSchema, conslaw_version, exponent_claims, fit_exponent
from .training import train_monitored


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


def one_run(lr: float, seed: int, masked: bool, shape: tuple, tokens, labels, steps: int, batch: int) -> dict:
    """One SGD run of Figure 5 (masked or not) at learning rate ``lr`` from seed ``seed``."""
    vocab, length, dim, heads, hidden = shape
    model = seeded(lambda: TransformerClassifier(vocab, length, dim, heads, hidden, 1, 2, causal=masked), seed)
    model = model.double()
    laws, control = head_laws(model, tokens)
    (_, weights), = matrix_groups(laws).values()
    monitor = train_monitored(model, [*laws, control], tokens, labels, lr, steps, batch, seed)
    values = np.array(monitor.values)
    return {"masked": masked, "lr": lr, "seed": seed,
            "errors_law": frobenius_error(values[:, :-1], weights).tolist(),
            "errors_control": (np.abs(values[:, -1] - values[0, -1]) / abs(values[0, -1])).tolist(),
            "losses": monitor.losses[1:]}


def run_schema(steps: int) -> RunSchema:
    """What a Figure 5 run record holds: masked, lr, seed, errors (steps + 1 each), losses (steps)."""
    return RunSchema(scalars={"masked": bool, "lr": (float, int), "seed": int},
                     lists={"errors_law": steps + 1, "errors_control": steps + 1, "losses": steps})


def run(quick: bool = True, data: str | None = None, out: str = "results", progress: bool = True) -> dict:
    """Figure 5: every (mask, seed, lr) run (cached), fitted exponents, claims, figure and JSON."""
    out_dir = Path(out) / "fig5"
    ensure_dir(out_dir / "runs")
    dim, heads, hidden, length, seeds, steps, batch = (16, 2, 32, 32, 2, 10, 16) if quick else \
        (64, 4, 128, 64, 10, 50, 32)
    lrs = [1e-2, 2.5e-2, 5e-2] if quick else [1e-2, 2e-2, 3e-2, 4e-2, 5e-2]
    limit = None if not quick else 2000
    if data:
        from ..data.imdb import fingerprint, load_imdb
        source = f"{fingerprint(data)}:limit{limit}"
        tokens, labels, vocab = load_imdb(data, length=length, limit=limit)
        synthetic = False
    else:
        from ..data.imdb import synthetic_imdb
        tokens, labels, vocab = synthetic_imdb(2048, 200, length)
        source, synthetic = "synthetic:imdb:n2048:vocab200:seed0", True
    common = {"experiment": "fig5", "protocol": "quick" if quick else "full",
              "model": {"dim": dim, "heads": heads, "hidden": hidden, "length": length, "vocab": len(vocab)},
              "data": source, "steps": steps, "batch": batch, "dtype": "torch.float64", "version": conslaw_version()}
    cache, schema = RunCache(out_dir / "runs"), run_schema(steps)
    shape = (len(vocab), length, dim, heads, hidden)
    runs = []
    for masked in (False, True):
        for seed in tqdm(range(seeds), desc=f"fig5 {'masked' if masked else 'unmasked'}", disable=not progress):
            for lr in lrs:
                def compute(lr=lr, seed=seed, masked=masked):
                    return one_run(lr, seed, masked, shape, tokens, labels, steps, batch)

                stem = f"{'masked' if masked else 'unmasked'}_lr{lr:g}_seed{seed}"
                runs.append(cache.run(stem, {**common, "masked": masked, "lr": lr, "seed": seed}, schema, compute))
    by_mask = {}
    for masked in (False, True):
        sub = [r for r in runs if r["masked"] == masked]
        final = {n: [float(np.mean([r[f"errors_{n}"][-1] for r in sub if r["lr"] == lr])) for lr in lrs]
                 for n in ("law", "control")}
        by_mask["masked" if masked else "unmasked"] = {
            "exponent_conserved": fit_exponent(lrs, final["law"]),
            "exponent_control": fit_exponent(lrs, final["control"]),
            "final_error_law": final["law"], "final_error_control": final["control"]}
    result = {"experiment": "fig5", "synthetic": synthetic, "data": source, "runs": len(runs), **cache.counts(),
              "learning_rates": lrs, "seeds": seeds,
              "steps": steps, "exponent_conserved": by_mask["unmasked"]["exponent_conserved"],
              "exponent_control": by_mask["unmasked"]["exponent_control"], "by_mask": by_mask,
              "figure": str(out_dir / "fig5.png"), "results": str(out_dir / "fig5.json")}
    plot(runs, lrs, result["figure"], synthetic)
    result["claims"] = [row for key, r in by_mask.items() for row in exponent_claims(
        f"Fig 5 ({key}): |QQ^T - KK^T| error ~ lr^2", f"Fig 5 ({key}): control ~ lr",
        r["exponent_conserved"], r["exponent_control"])]
    atomic_write(result["results"], dumps_json(result, indent=1))
    return result


def plot(runs, lrs, path, synthetic) -> None:
    """Frobenius relative error of Q Q^T - K K^T against steps, masked and unmasked; losses below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(lrs)))
    for col, masked in enumerate((False, True)):
        sub = [r for r in runs if r["masked"] == masked]
        ratios = [np.asarray(r["errors_law"][1:]) / (np.arange(1, len(r["errors_law"])) * r["lr"] ** 2) for r in sub]
        c = float(np.median(np.concatenate(ratios)))
        for lr, color in zip(lrs, colors, strict=True):
            errs = np.mean([r["errors_law"] for r in sub if r["lr"] == lr], axis=0)
            losses = np.mean([r["losses"] for r in sub if r["lr"] == lr], axis=0)
            steps = np.arange(1, len(errs))
            axes[0, col].semilogy(steps, errs[1:], color=color, label=f"lr={lr:g}")
            axes[0, col].semilogy(steps, c * steps * lr ** 2, ":", color=color)
            axes[1, col].plot(steps, losses, color=color)
        axes[0, col].set_title(("masked" if masked else "unmasked") + (" (SYNTHETIC data)" if synthetic else " (IMDb)"))
        axes[1, col].set_xlabel("step")
    axes[0, 0].set_ylabel("|H_k - H_0|_F / |H_0|_F,  H = Q Q^T - K K^T")
    axes[1, 0].set_ylabel("loss")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
