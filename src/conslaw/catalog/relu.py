"""Deep ReLU networks, with or without hidden biases (paper eq. 15, Prop 3.5).

Widths input first; W_l has shape (n_l, n_{l-1}); with ``bias`` every hidden
layer l < q has b_l (the paper's b_k; the output layer has none, as in the
reference notebook). phi is the path lifting: the products of weights along
every input-to-output path, and along every path from a hidden bias to the
output. For two layers this is (u_k v_k^T)_k (resp. u_k (v_k, b_k)^T) of
Thm 3.4. Laws: per hidden neuron k of layer l,
|W_{l+1}[:,k]|^2 - |W_l[k,:]|^2 - b_l[k]^2 (Prop 3.5; exactly one per
hidden neuron, as the reference notebook verifies for deep networks).
"""

from __future__ import annotations

import torch

from ..laws import balance_law, unit_slot
from ..params import ParamSpace
from .base import Architecture
from .linear import check_widths


def path_lifting(params: dict[str, torch.Tensor], q: int, bias: bool) -> torch.Tensor:
    """All path products: input->output paths, and hidden-bias->output paths when ``bias``."""
    paths = [params["W1"]]  # tensors indexed (current neuron, ..., path start)
    for layer in range(2, q + 1):
        if bias:
            paths.append(params[f"b{layer - 1}"])
        w = params[f"W{layer}"]
        paths = [w.reshape(*w.shape, *([1] * (t.dim() - 1))) * t.unsqueeze(0) for t in paths]
    return torch.cat([t.reshape(-1) for t in paths])


def path_pairing(params: dict[str, torch.Tensor], c: dict[str, torch.Tensor], q: int,
                 bias: bool) -> torch.Tensor:
    """<phi(theta), a(c)> for the path lifting and rank-one coefficients a(c), in O(D).

    a(c) restricted to input paths is c["w0"] x ... x c["wq"] (outer product);
    restricted to the paths leaving hidden bias b_l it is c["b{l}_l"] x ... x c["b{l}_q"].
    The pairing is then a chain of matrix-vector products gated by the
    factors. Rank-one tensors span R^d, so these fields span W (Thm 3.4).
    """
    v = c["w0"]
    for k in range(1, q + 1):
        v = c[f"w{k}"] * (params[f"W{k}"] @ v)
    total = v.sum()
    if bias:
        for layer in range(1, q):
            v = c[f"b{layer}_{layer}"] * params[f"b{layer}"]
            for k in range(layer + 1, q + 1):
                v = c[f"b{layer}_{k}"] * (params[f"W{k}"] @ v)
            total = total + v.sum()
    return total


def path_coefficients(widths: list[int], bias: bool):
    """Sampler of the Gaussian rank-one factors used by :func:`path_pairing`."""
    q = len(widths) - 1
    keys = [(f"w{k}", widths[k]) for k in range(q + 1)]
    if bias:
        keys += [(f"b{layer}_{k}", widths[k]) for layer in range(1, q) for k in range(layer, q + 1)]

    def sample(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {key: torch.randn(n, size, generator=generator, dtype=torch.float64) for key, size in keys}

    return sample


def mlp(params: dict[str, torch.Tensor], x: torch.Tensor, q: int, bias: bool) -> torch.Tensor:
    """Multi-layer ReLU network g(theta, x) = W_q relu(... relu(W_1 x + b_1) ...) on one input."""
    for layer in range(1, q):
        x = params[f"W{layer}"] @ x
        x = torch.relu(x + params[f"b{layer}"] if bias else x)
    return params[f"W{q}"] @ x


def relu(*widths: int, bias: bool = False) -> Architecture:
    """The ReLU network with the given widths (input first)."""
    widths = check_widths(widths, "relu")
    q = len(widths) - 1
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(1, q + 1):
        shapes[f"W{layer}"] = (widths[layer], widths[layer - 1])
        if bias and layer < q:
            shapes[f"b{layer}"] = (widths[layer],)
    space = ParamSpace(shapes)
    def laws():
        found = []
        for layer in range(1, q):
            for k in range(widths[layer]):
                minus = [unit_slot(space, f"W{layer}", 0, k)] + \
                    ([unit_slot(space, f"b{layer}", 0, k)] if bias else [])
                found.append(balance_law(f"neuron {layer}.{k}", [unit_slot(space, f"W{layer + 1}", 1, k)], minus,
                                         family="rescaling", module=f"layer {layer}", unit=(k,)))
        return found

    hidden = sum(widths[1:-1])
    notes = []
    if q > 2:
        notes.append("deep ReLU: phi (path lifting) counts the laws on the generic set where every "
                     "path is active somewhere; the model's own fields (--fields model) see only "
                     "the activation regions reached by sampled inputs at this theta, and neurons "
                     "that are dead or always active there add laws (an upper bound)")
    source = "Prop 3.5 (ReLU): one law per hidden neuron" if q == 2 else \
        "one law per hidden neuron (Prop 3.5; deep case as in the reference notebook)"
    return Architecture(
        name="relu", label=f"relu {widths}{' bias' if bias else ''}",
        config={"widths": widths, "bias": bias}, space=space,
        model=lambda p, x: mlp(p, x, q, bias), input_shape=(widths[0],), laws=laws,
        phi=lambda p: path_lifting(p, q, bias),
        pairing=(lambda p, c: path_pairing(p, c, q, bias), path_coefficients(widths, bias)),
        expected=hidden, expected_source=source, notes=notes, multiscale_inputs=True)
