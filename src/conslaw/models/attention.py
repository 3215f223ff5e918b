"""A hand-written multi-head self-attention, with its heads split in every way models write it.

``MiniAttention(split=...)`` computes o(concat_h softmax(q_h k_h^T / sqrt(dh)) v_h) (eq. 19 of the
paper, biases optional) on inputs of shape (N, tokens, dim). The heads are split with

- ``view``, ``reshape``, ``unflatten``: (N, T, E) -> (N, T, H, dh), transposed to (N, H, T, dh);
- ``split``, ``chunk``: one tensor per head (a Python loop over heads), concatenated before o;
- ``einsum``: the scores and the weighted values as einsum contractions over (N, T, H, dh);
- ``sdpa``: ``F.scaled_dot_product_attention`` on (N, H, T, dh).

``fused=True`` computes q, k, v with one Linear of 3E outputs (timm's ``qkv``), split by
``reshape(N, T, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)``. The law analysis
(:mod:`conslaw.nn.heads`) must find the same per-head laws in every variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLITS = ("view", "reshape", "unflatten", "split", "chunk", "einsum", "sdpa")


class MiniAttention(nn.Module):
    """Multi-head self-attention (eq. 19) with q, k, v, o projections; see the module docstring.

    Args:
        dim: model width E.
        heads: number of heads H (dividing E).
        split: how heads are split, one of :data:`SPLITS`.
        bias: biases on the projections.
        fused: one Linear ``qkv`` of 3E outputs instead of q, k, v.
    """

    def __init__(self, dim: int = 4, heads: int = 2, split: str = "view", bias: bool = False,
                 fused: bool = False) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide dim {dim}")
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.q, self.k, self.v = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.o = nn.Linear(dim, dim, bias=bias)
        self.n_head, self.split, self.fused = heads, split, fused

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (N, H, T, dh)."""
        B, T, E = x.shape
        H = self.n_head
        if self.fused:
            return self.qkv(x).reshape(B, T, 3, H, E // H).permute(2, 0, 3, 1, 4).unbind(0)
        out = []
        for lin in (self.q, self.k, self.v):
            y = lin(x)
            if self.split == "view":
                y = y.view(B, T, H, E // H)
            elif self.split == "unflatten":
                y = y.unflatten(-1, (H, E // H))
            else:
                y = y.reshape(B, T, H, E // H)
            out.append(y.transpose(1, 2))
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """o(concat_h softmax(q_h k_h^T / sqrt(dh)) v_h) for x of shape (N, tokens, dim)."""
        B, T, E = x.shape
        H, dh = self.n_head, E // self.n_head
        if self.split in ("split", "chunk") and not self.fused:
            q, k, v = self.q(x), self.k(x), self.v(x)
            if self.split == "split":
                parts = [t.split(dh, dim=-1) for t in (q, k, v)]
            else:
                parts = [torch.chunk(t, H, dim=-1) for t in (q, k, v)]
            qs, ks, vs = parts  # indexed, not iterated, so that torch.fx can trace the loop over heads
            outs = [torch.softmax(qs[h] @ ks[h].transpose(-2, -1) / dh ** 0.5, dim=-1) @ vs[h] for h in range(H)]
            return self.o(torch.cat(outs, dim=-1))
        if self.split == "einsum" and not self.fused:
            q, k, v = (lin(x).unflatten(-1, (H, dh)) for lin in (self.q, self.k, self.v))
            att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / dh ** 0.5, dim=-1)
            return self.o(torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, T, E))
        q, k, v = self._project(x)
        if self.split == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1) / dh ** 0.5, dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, E))
