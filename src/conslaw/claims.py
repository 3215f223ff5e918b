"""The one table of the paper's counting claims, shared by ``conslaw tour`` and the tests.

Each :class:`Claim` names a block of the paper's catalog, the options of the
count, the theorem, and two numbers written from the paper (never computed by
the code under test): ``laws``, the number of independent laws the theorem
gives (what D - dim Lie must be), and ``known``, the number of independent
closed forms among the catalog's laws (equal to ``laws`` when the catalog's list
is complete; smaller for Ex 4.8, whose third law is not polynomial; None where
the catalog has no closed form for that flow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import catalog
from .catalog import Architecture


@dataclass(frozen=True)
class Claim:
    """One counting claim of the paper."""

    theorem: str
    build: Callable[[], Architecture]
    laws: int
    known: int | None
    options: dict = field(default_factory=dict)


CLAIMS: list[Claim] = [
    Claim("Prop 3.5 linear: r(r+1)/2", lambda: catalog.linear(3, 4, 2), 10, 10),
    Claim("Prop 3.5 linear (model fields)", lambda: catalog.linear(4, 3, 5), 6, 6, {"fields": "model"}),
    Claim("Prop 3.5 ReLU: r", lambda: catalog.relu(3, 4, 2), 4, 4),
    Claim("Prop 3.5 ReLU with bias: r", lambda: catalog.relu(3, 5, 2, bias=True), 5, 5, {"fields": "model"}),
    Claim("deep ReLU: hidden neurons", lambda: catalog.relu(2, 3, 4, 3, bias=True), 7, 7),
    Claim("Thm 3.6 conv: C1", lambda: catalog.conv((2, 3, 2), 6, (3, 2)), 3, 3),
    Claim("Thm 3.6 strided conv: C1", lambda: catalog.conv((2, 3, 2), 6, (3, 2), stride=2), 3, 3, {"fields": "model"}),
    Claim("Cor 3.9 attention: d1(d1+1)", lambda: catalog.attention(3, 2, 2), 6, 6),
    Claim("Cor 3.9 attention (model fields)", lambda: catalog.attention(3, 3, 4), 20, 20, {"fields": "model"}),
    Claim("Cor 3.10 2 heads: per-head laws", lambda: catalog.attention(3, 4, 4, heads=2), 12, 12),
    Claim("Prop 3.11 softmax: M", lambda: catalog.softmax(3, 4), 4, 4),
    Claim("Prop 3.2 skip changes nothing", lambda: catalog.relu(3, 4, 3).residual(), 4, 4, {"fields": "model"}),
    Claim("Sec 4.4 ResNet Q=2, M>1: Q*R", lambda: catalog.resnet(3, 2, 2), 4, 4),
    Claim("Thm 4.6 ResNet block 2 of 3: R", lambda: catalog.resnet(3, 2, 3), 2, 2, {"block": ["V2", "U2"]}),
    Claim("Thm 4.6 attention block in transformer", lambda: catalog.transformer(3, 2, 2, 3, 2), 6, 6,
          {"block": ["Q2", "K2", "V2", "O2"]}),
    Claim("Thm 4.7 (V2, U1) across a skip: 0", lambda: catalog.resnet(3, 2, 3), 0, 0, {"block": ["V2", "U1"]}),
    Claim("Ex 4.8 ResNet M=R=1, same signs: 3 (2 polynomial)", lambda: catalog.resnet(1, 1, 2), 3, 2,
          {"init": "positive"}),
    Claim("App R sign flow n=m=r=1: 1", lambda: catalog.linear(1, 1, 1), 1, 1, {"flow": "sign"}),
    Claim("App R sign flow U V^T: none", lambda: catalog.linear(2, 2, 2), 0, None, {"flow": "sign"}),
]

#: built-in nn.Modules whose named laws are compared with the Lie engine's count on loss gradients
MODEL_CHECKS = ["mlp", "cnn", "resnet-block", "resnet-block-nobn", "transformer-handwritten"]
