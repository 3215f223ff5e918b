"""Sparse mixture-of-experts feed-forward blocks (Mixtral, Qwen-MoE, OLMoE in transformers >= 5): laws per expert.

A block routes each token to the top-k of E experts by a router (``gate``, a bias-free
Linear H -> E read through a softmax), and expert e computes
down_e (act(gate_e x) * up_e x) with ``experts.gate_up_proj[e]`` = [gate_e; up_e] (2I x H)
and ``experts.down_proj[e]`` (H x I). Two symmetries hold whatever the routing:

- per expert e and hidden unit k (gated MLP, as SwiGLU): up row k times a, down column k
  divided by a leaves expert e unchanged, so |up_e[k, :]|^2 - |down_e[:, k]|^2 is conserved
  (the gate row has no such symmetry: act is not homogeneous);
- the router's logits enter only through softmax (then top-k, then renormalised or not):
  adding one vector v to every router row adds <x, v> to all logits of a token alike, so
  every column sum sum_e W_router[e, j] is conserved (Prop 3.11's translation, H laws).

The routing is data-dependent, so ``torch.export`` cannot capture the block: the export front end
runs such handler leaves as one opaque op (:mod:`.export`). Exactness is decided by the residual on
the model, as for every family.
"""

from __future__ import annotations

from torch import nn

from ..laws import Slot, balance_law, linear_law, unit_slot
from ..laws.slots import index_dtype
from ..params import ParamSpace
from .findings import Findings
from .handlers import Handler


class SparseMoEHandler(Handler):
    """Laws of a sparse MoE block (module docstring): per expert unit, and the router's column sums."""

    def laws(self, name: str, module: nn.Module, space: ParamSpace, findings: Findings) -> None:
        """|up_e[k, :]|^2 - |down_e[:, k]|^2 for every expert e and unit k; sum_e W_router[e, j] for every j."""
        gate_up, down, router = f"{name}.experts.gate_up_proj", f"{name}.experts.down_proj", f"{name}.gate.weight"
        if not {gate_up, down, router} <= set(space.shapes):
            return
        E, two_i, H = space.shapes[gate_up]
        inner = two_i // 2
        up_index, down_index = space.indices(gate_up), space.indices(down)
        for e in range(E):
            for k in range(inner):
                up = Slot(gate_up, up_index[e, inner + k].reshape(-1).to(index_dtype(space), copy=True),
                          f"{gate_up}[{e},{inner + k},:]")
                out = Slot(down, down_index[e, :, k].reshape(-1).to(index_dtype(space), copy=True),
                           f"{down}[{e},:,{k}]")
                findings.laws.append(balance_law(f"{name} expert {e} unit {k}", [up], [out],
                                                 family="rescaling (expert)", module=name, unit=(e, k)))
        for j in range(H):
            findings.laws.append(linear_law(f"{name} router column {j}", [unit_slot(space, router, 1, j)],
                                            family="translation (router)", module=name, unit=(j,)))


SPARSE_MOE_HANDLER = SparseMoEHandler()
