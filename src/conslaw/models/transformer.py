"""Small Transformer encoder classifiers (the Figure 5 setting, at toy sizes).

``TransformerClassifier``: token + learned position embeddings, nn.TransformerEncoder
(batch_first, post-LN by default), mean over tokens, a linear head.
``HandWrittenAttentionClassifier``: the same with a single attention head written
with separate Q, K, V, O Linear modules (no normalization), as in eq. (18).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TransformerClassifier(nn.Module):
    """Token embedding + learned positions, nn.TransformerEncoder, mean pooling, linear head."""

    def __init__(self, vocab: int = 50, tokens: int = 8, dim: int = 16, heads: int = 2, hidden: int = 32,
                 layers: int = 1, classes: int = 2, norm_first: bool = False, causal: bool = False) -> None:
        super().__init__()
        #: a causal attention mask (the "masked" runs of Figure 5)
        self.causal = causal
        self.register_buffer("mask", torch.triu(torch.full((tokens, tokens), float("-inf")), 1), persistent=False)
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(tokens, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        """Logits of a batch of token ids (N, tokens)."""
        x = self.embed(tokens) + self.position
        x = self.encoder(x, mask=self.mask) if self.causal else self.encoder(x)
        return self.head(x.mean(dim=1))


class SingleHeadAttention(nn.Module):
    """softmax(X Q^T K X^T / sqrt(d)) X V^T O^T with q, k, v, o Linear modules (eq. 18 with biases)."""

    def __init__(self, dim: int, d1: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, d1)
        self.k = nn.Linear(dim, d1)
        self.v = nn.Linear(dim, d1)
        self.o = nn.Linear(d1, dim)
        self.scale = 1.0 / math.sqrt(d1)

    def forward(self, x):
        """o(softmax(q(x) k(x)^T / sqrt(d1)) v(x)) for x of shape (N, tokens, dim)."""
        scores = self.q(x) @ self.k(x).transpose(-2, -1) * self.scale
        return self.o(torch.softmax(scores, dim=-1) @ self.v(x))


class HandWrittenAttentionClassifier(nn.Module):
    """One attention head written with four Linear modules q, k, v, o (eq. 18 with biases)."""

    def __init__(self, vocab: int = 50, tokens: int = 8, dim: int = 8, d1: int = 4, hidden: int = 16,
                 classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attention = SingleHeadAttention(dim, d1)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        """Logits of a batch of token ids (N, tokens)."""
        x = self.embed(tokens)
        x = x + self.attention(x)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(dim=1))
