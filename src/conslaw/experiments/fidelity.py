"""Fidelity, stated: each experiment's protocol record and its deviations from the paper's protocol.

The paper's protocols (Sec 5.2 and App O, Figures 1, 4 and 5), as the paper writes them:

- Figure 1 / 4: ResNet-18 on CIFAR-10, SGD without momentum or weight decay, learning rates
  between 1e-3 and 5e-3, 10 seeds, 50 steps, tracked h = sum_j h_j of eq. (17) on the first
  residual block, relative error |h(theta_k) - h(theta_0)| / |h(theta_0)|.
- Figure 5: a Transformer on IMDb, same optimizer, learning rates between 1e-3 and 5e-3, 8 seeds,
  50 steps, masked and unmasked, |Q Q^T - K K^T|_F of the first head of the first layer (Cor 3.10).

The paper states neither the batch size, nor the dtype, nor the device, nor the Transformer's
sizes: those are recorded and called "not stated" (never a deviation). The dtype compared with is
PyTorch's default, float32, which the paper's code presumably used.

A protocol record holds: model, data, law (name), law_formula, learning_rates, seeds, steps, batch,
dtype, device, optimizer. A deviation is one sentence: what differs, the paper's value, ours.
"""

from __future__ import annotations

import textwrap

#: the paper's protocols (Sec 5.2, App O); None where the paper does not say
PAPER = {
    "fig1": {"model": "ResNet-18 (CIFAR, width 64, BatchNorm)", "width": 64, "norm": "bn", "data": "CIFAR-10",
             "law": "eq17", "lr_range": (1e-3, 5e-3), "seeds": 10, "steps": 50, "batch": None,
             "dtype": "torch.float32", "device": None, "source": "Sec 5.2, Fig 1; App O, Fig 4"},
    "fig5": {"model": "Transformer (sizes not stated)", "data": "IMDb", "lr_range": (1e-3, 5e-3), "seeds": 8,
             "steps": 50, "batch": None, "dtype": "torch.float32", "device": None,
             "source": "Sec 5.2; App O, Fig 5"},
}

OPTIMIZER = "SGD, no momentum, no weight decay"


def protocol_record(*, model: str, data: str, law: str, law_formula: str, learning_rates, seeds: int, steps: int,
                    batch: int | None, dtype: str, device: str = "cpu", optimizer: str = OPTIMIZER) -> dict:
    """The protocol record of one experiment (every key always present)."""
    return {"model": model, "data": data, "law": law, "law_formula": law_formula,
            "learning_rates": [float(lr) for lr in learning_rates], "seeds": int(seeds), "steps": int(steps),
            "batch": batch, "dtype": dtype, "device": device, "optimizer": optimizer}


def figure_deviations(experiment: str, *, synthetic: bool, learning_rates, seeds: int, steps: int,
                      dtypes: list[str], **model) -> list[str]:
    """Every difference from the paper's protocol of ``experiment`` (fig1 or fig5), one sentence each.

    Args:
        experiment: ``fig1`` or ``fig5``.
        synthetic: built-in stand-in data instead of the paper's dataset.
        learning_rates: the protocol's learning rates.
        seeds: its number of seeds.
        steps: its number of SGD steps.
        dtypes: the training dtypes the experiment's claims rest on.
        **model: for fig1: ``width``, ``norm``, ``law``.
    """
    paper = PAPER[experiment]
    found = []
    if synthetic:
        found.append(f"data: SYNTHETIC {'CIFAR-shaped images' if experiment == 'fig1' else 'token sequences'} "
                     f"instead of {paper['data']} (pass --data DIR for the real data)")
    low, high = paper["lr_range"]
    outside = [lr for lr in learning_rates if not low * (1 - 1e-9) <= lr <= high * (1 + 1e-9)]
    if outside:
        found.append(f"learning rates {', '.join(f'{lr:g}' for lr in outside)} outside the paper's range "
                     f"{low:g} .. {high:g}")
    if seeds != paper["seeds"]:
        found.append(f"seeds: {seeds} instead of {paper['seeds']}")
    if steps != paper["steps"]:
        found.append(f"steps: {steps} instead of {paper['steps']}")
    if experiment == "fig1":
        if model["width"] != paper["width"]:
            found.append(f"width: {model['width']} instead of {paper['width']} (ResNet-18 stage widths "
                         f"{model['width']}, {2 * model['width']}, {4 * model['width']}, {8 * model['width']})")
        if model["norm"] != paper["norm"]:
            found.append("model: ResNet-18 without normalization (eq. 17 exact) instead of the BatchNorm ResNet-18")
        if model["law"] != paper["law"]:
            found.append("law: the exact BatchNorm law sum_j |conv2[:,j]|^2 - gamma_j^2 - beta_j^2 instead of "
                         "eq. (17) summed over the first block")
    wrong = [d for d in dtypes if d != paper["dtype"]]
    if wrong:
        found.append(f"dtype: the claims rest on {', '.join(wrong)} training instead of {paper['dtype']} "
                     "(PyTorch's default, presumably the paper's)")
    return found


def describe(result: dict) -> list[str]:
    """Text lines for the output: the protocol, the deviations (or 'none'), and the experiment's notes."""
    name = result.get("experiment", "?")
    proto = result.get("protocol_record")
    if proto is None:
        return []
    lrs = ", ".join(f"{lr:g}" for lr in proto["learning_rates"]) or "-"
    lines = [f"[{name}] protocol: {proto['model']}; data: {proto['data']}; {proto['optimizer']}",
             f"[{name}]   law: {proto['law']} = {proto['law_formula']}",
             f"[{name}]   learning rates: {lrs}; seeds: {proto['seeds']}; steps: {proto['steps']}; "
             f"batch: {proto['batch'] if proto['batch'] is not None else '-'}; dtype: {proto['dtype']}; "
             f"device: {proto['device']}"]
    deviations = result.get("deviations", [])
    if deviations:
        lines.append(f"[{name}] deviations from the paper's protocol ({len(deviations)}):")
        lines += [f"[{name}]   - {d}" for d in deviations]
    else:
        lines.append(f"[{name}] deviations from the paper's protocol: none")
    lines += [f"[{name}] note: {note}" for note in result.get("notes", [])]
    return lines


def caption(result: dict, width: int = 150) -> str:
    """The figure caption: protocol and deviations, wrapped to ``width`` characters."""
    text = [line.split("] ", 1)[-1] for line in describe(result)]
    return "\n".join(textwrap.fill(t, width, subsequent_indent="    ") for t in text)


def draw_caption(fig, result: dict, width: int = 150) -> None:
    """Put :func:`caption` under the axes of ``fig`` (the figure grows to hold it)."""
    text = caption(result, width)
    lines = text.count("\n") + 1
    w, h = fig.get_size_inches()
    extra = 0.16 * lines
    fig.set_size_inches(w, h + extra)
    fig.subplots_adjust(bottom=extra / (h + extra) + 0.06 * h / (h + extra))
    fig.text(0.01, 0.005, text, fontsize=6, family="monospace", va="bottom", ha="left")


def finish_figure(fig, result: dict, path, width: int = 150) -> None:
    """Lay out ``fig``, draw the protocol caption under it, save it to ``path`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    from ..io import save_figure

    fig.tight_layout()
    draw_caption(fig, result, width=width)
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
