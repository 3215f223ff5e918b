"""Built-in models for ``conslaw laws`` (``conslaw laws --list``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .gpt import MiniGPT
from .resnet import BasicBlock, CifarResNet, resnet18_cifar
from .transformer import HandWrittenAttentionClassifier, SingleHeadAttention, TransformerClassifier


@dataclass
class BuiltIn:
    """A built-in model: its factory, an example input, its training loss and a description."""

    factory: Callable[[], nn.Module]
    example: Callable[[], torch.Tensor]
    loss: str
    description: str

    def build(self, seed: int = 0) -> nn.Module:
        """The model initialised from ``seed``; the global RNG state is left as it was."""
        return seeded(self.factory, seed)


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` run with the global RNG seeded, then restored (library code never reseeds it for good)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))


def _tokens(n: int = 4, length: int = 4, vocab: int = 10) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))


BUILTINS: dict[str, BuiltIn] = {
    "mlp": BuiltIn(_mlp, lambda: torch.randn(4, 6), "mse", "MLP 6-8-5-3 with ReLU and biases"),
    "cnn": BuiltIn(_cnn, lambda: torch.randn(4, 3, 6, 6), "cross_entropy",
                   "2 conv + ReLU, global average pool, linear head (3x6x6 inputs)"),
    "resnet-block": BuiltIn(lambda: CifarResNet((1,), (4,), classes=3), lambda: torch.randn(4, 3, 6, 6),
                            "cross_entropy", "1-block CIFAR ResNet with BatchNorm, 4 channels"),
    "resnet-block-nobn": BuiltIn(lambda: CifarResNet((1,), (4,), classes=3, batchnorm=False),
                                 lambda: torch.randn(4, 3, 6, 6), "cross_entropy",
                                 "1-block CIFAR ResNet without BatchNorm, 4 channels"),
    "resnet18-cifar": BuiltIn(resnet18_cifar, lambda: torch.randn(2, 3, 32, 32), "cross_entropy",
                              "CIFAR ResNet-18 (BasicBlocks, BatchNorm, 3x3 stem, no max-pool), 11.2M parameters"),
    "resnet18-cifar-nobn": BuiltIn(lambda: resnet18_cifar(batchnorm=False), lambda: torch.randn(2, 3, 32, 32),
                                   "cross_entropy", "the same ResNet-18 without BatchNorm (biased convolutions)"),
    "transformer": BuiltIn(lambda: TransformerClassifier(vocab=10, tokens=4, dim=4, heads=2, hidden=6),
                           lambda: _tokens(), "cross_entropy",
                           "1-layer nn.TransformerEncoder classifier (E=4, 2 heads, post-LN), 4 tokens of 10"),
    "transformer-prenorm": BuiltIn(lambda: TransformerClassifier(vocab=10, tokens=4, dim=4, heads=2, hidden=6,
                                                                 norm_first=True),
                                   lambda: _tokens(), "cross_entropy", "the same, pre-LN (norm_first=True)"),
    "mini-gpt": BuiltIn(MiniGPT, lambda: _tokens(vocab=12), "cross_entropy",
                        "hand-written mini GPT: pre-LN, 2 heads split by view, GELU MLP, learned positions (E=8)"),
    "transformer-handwritten": BuiltIn(lambda: HandWrittenAttentionClassifier(vocab=10, tokens=4, dim=6, d1=3,
                                                                              hidden=8),
                                       lambda: _tokens(), "cross_entropy",
                                       "single-head attention with separate q, k, v, o Linear modules"),
}

__all__ = [
    "BUILTINS",
    "BasicBlock",
    "BuiltIn",
    "CifarResNet",
    "HandWrittenAttentionClassifier",
    "SingleHeadAttention",
    "TransformerClassifier",
    "resnet18_cifar",
    "seeded",
]
