"""A hand-written multi-head self-attention, with its heads split in every way models write it.

``MiniAttention(split=...)`` computes o(concat_h softmax(q_h k_h^T / sqrt(dh)) v_h) (eq. 19 of the
paper, biases optional) on inputs of shape (N, tokens, dim). The heads are split with

- ``view``, ``reshape``, ``unflatten``: (N, T, E) -> (N, T, H, dh), transposed to (N, H, T, dh);
- ``split``, ``chunk``: one tensor per head (a Python loop over heads), concatenated before o;
- ``einsum``: the scores and the weighted values as einsum contractions over (N, T, H, dh);
- ``sdpa``: ``F.scaled_dot_product_attention`` on (N, H, T, dh).

``fused=True`` computes q, k, v with one Linear of 3E outputs (timm's ``qkv``), split by
``reshape(N, T, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)``. ``kv_heads < heads`` shares each
key/value head among heads / kv_heads query heads (grouped-query attention; multi-query when 1),
and ``rope=True`` rotates queries and keys by position (x cos + rotate_half(x) sin, Llama's form);
both with the ``view``, ``reshape``, ``unflatten`` and ``sdpa`` splits. The law analysis
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
        kv_heads: key/value heads (default: ``heads``), dividing ``heads``.
        rope: rotary position embedding of queries and keys.
        tokens: the number of tokens (the length of the rotary tables; inputs must have as many).
    """

    def __init__(self, dim: int = 4, heads: int = 2, split: str = "view", bias: bool = False,
                 fused: bool = False, kv_heads: int | None = None, rope: bool = False, tokens: int = 4) -> None:
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if dim % heads or heads % kv_heads:
            raise ValueError(f"{heads} heads must divide dim {dim}, and {kv_heads} kv heads must divide {heads}")
        if (kv_heads != heads or rope) and (fused or split in ("split", "chunk", "einsum")):
            raise ValueError("kv_heads and rope go with unfused view, reshape, unflatten or sdpa splits")
        dh = dim // heads
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.k, self.v = (nn.Linear(dim, kv_heads * dh, bias=bias) for _ in range(2))
        self.o = nn.Linear(dim, dim, bias=bias)
        self.n_head, self.kv_heads, self.split, self.fused, self.rope = heads, kv_heads, split, fused, rope
        if rope:
            inv_freq = 1.0 / 10000 ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh)
            angles = torch.outer(torch.arange(tokens, dtype=torch.float64), inv_freq)
            angles = torch.cat([angles, angles], dim=-1)
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x cos + rotate_half(x) sin by token position (x: (N, heads, tokens, dh))."""
        return x * self.cos.to(x.dtype) + self._rotate_half(x) * self.sin.to(x.dtype)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (N, H, T, dh)."""
        B, T, E = x.shape
        H = self.n_head
        if self.fused:
            return self.qkv(x).reshape(B, T, 3, H, E // H).permute(2, 0, 3, 1, 4).unbind(0)
        out = []
        for lin, heads in ((self.q, H), (self.k, self.kv_heads), (self.v, self.kv_heads)):
            y = lin(x)
            if self.split == "view":
                y = y.view(B, T, heads, E // H)
            elif self.split == "unflatten":
                y = y.unflatten(-1, (heads, E // H))
            else:
                y = y.reshape(B, T, heads, E // H)
            out.append(y.transpose(1, 2))
        q, k, v = out
        if self.rope:
            q, k = self._rotate(q), self._rotate(k)
        return q, k, v

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
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.kv_heads != H)
        else:
            if self.kv_heads != H:
                k, v = (t.repeat_interleave(H // self.kv_heads, dim=1) for t in (k, v))
            y = torch.softmax(q @ k.transpose(-2, -1) / dh ** 0.5, dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, E))
