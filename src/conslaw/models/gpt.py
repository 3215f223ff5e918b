"""A hand-written mini GPT (pre-LN, learned positions, GELU MLP), with its heads split in several ways.

The attention splits its heads with ``view``, ``reshape`` or ``unflatten`` (``split``):
the laws found must not depend on how a model reshapes its heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLITS = ("view", "reshape", "unflatten")


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q, k, v, o Linear modules (eq. 19 with biases)."""

    def __init__(self, dim: int, heads: int, split: str = "view") -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.n_head, self.split = heads, split

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, E = x.shape
        if self.split == "view":
            x = x.view(B, T, self.n_head, E // self.n_head)
        elif self.split == "reshape":
            x = x.reshape(B, T, self.n_head, E // self.n_head)
        else:
            x = x.unflatten(-1, (self.n_head, E // self.n_head))
        return x.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """o(concat_h softmax(q_h k_h^T / sqrt(dh)) v_h) for x of shape (N, tokens, dim)."""
        B, T, E = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / (E // self.n_head) ** 0.5, dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(B, T, E))


class MiniGPT(nn.Module):
    """Token + position embeddings, one pre-LN block (attention, GELU MLP), final LayerNorm, mean, linear head."""

    def __init__(self, vocab: int = 12, tokens: int = 4, dim: int = 8, heads: int = 2, classes: int = 3,
                 split: str = "view") -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(tokens, dim) * 0.1)
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, split)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of token ids (N, tokens)."""
        x = self.embed(ids) + self.position
        x = x + self.attn(self.ln1(x))
        x = x + self.proj(F.gelu(self.fc(self.ln2(x))))
        return self.head(self.ln_f(x).mean(1))
