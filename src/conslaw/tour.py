"""The main job: every catalog block counted and compared with the paper (``conslaw tour``)."""

from __future__ import annotations

from tqdm.auto import tqdm

from . import catalog
from .count import count

#: (architecture, count options, claim, expected number of laws)
#: ``known`` is not compared where the catalog's closed forms are not all the laws (Ex 4.8)
TOUR = [
    (lambda: catalog.linear(3, 4, 2), {}, "Prop 3.5 linear: r(r+1)/2", 10),
    (lambda: catalog.linear(4, 3, 5), {"fields": "model"}, "Prop 3.5 linear (model fields)", 6),
    (lambda: catalog.relu(3, 4, 2), {}, "Prop 3.5 ReLU: r", 4),
    (lambda: catalog.relu(3, 5, 2, bias=True), {"fields": "model"}, "Prop 3.5 ReLU with bias: r", 5),
    (lambda: catalog.relu(2, 3, 4, 3, bias=True), {}, "deep ReLU: hidden neurons", 7),
    (lambda: catalog.conv((2, 3, 2), 6, (3, 2)), {}, "Thm 3.6 conv: C1", 3),
    (lambda: catalog.conv((2, 3, 2), 6, (3, 2), stride=2), {"fields": "model"}, "Thm 3.6 strided conv: C1", 3),
    (lambda: catalog.attention(3, 2, 2), {}, "Cor 3.9 attention: d1(d1+1)", 6),
    (lambda: catalog.attention(3, 3, 4), {"fields": "model"}, "Cor 3.9 attention (model fields)", 20),
    (lambda: catalog.attention(3, 4, 4, heads=2), {}, "Cor 3.10 2 heads: per-head laws", 12),
    (lambda: catalog.softmax(3, 4), {}, "Prop 3.11 softmax: M", 4),
    (lambda: catalog.relu(3, 4, 3).residual(), {"fields": "model"}, "Prop 3.2 skip changes nothing", 4),
    (lambda: catalog.resnet(3, 2, 2), {}, "Sec 4.4 ResNet Q=2, M>1: Q*R", 4),
    (lambda: catalog.resnet(3, 2, 3), {"block": ["V2", "U2"]}, "Thm 4.6 ResNet block 2 of 3: R", 2),
    (lambda: catalog.transformer(3, 2, 2, 3, 2), {"block": ["Q2", "K2", "V2", "O2"]},
     "Thm 4.6 attention block in transformer", 6),
    (lambda: catalog.resnet(3, 2, 3), {"block": ["V2", "U1"]}, "Thm 4.7 (V2, U1) across a skip: 0", 0),
    (lambda: catalog.resnet(1, 1, 2), {"init": "positive"}, "Ex 4.8 ResNet M=R=1, same signs: 3", 3),
    (lambda: catalog.linear(1, 1, 1), {"flow": "sign"}, "App R sign flow n=m=r=1: 1", 1),
    (lambda: catalog.linear(2, 2, 2), {"flow": "sign"}, "App R sign flow U V^T: none", 0),
]


#: built-in nn.Modules whose named laws must equal the Lie engine's count on loss gradients
MODEL_TOUR = ["mlp", "cnn", "resnet-block", "resnet-block-nobn", "transformer-handwritten"]


def run_model_tour(progress: bool = False) -> list[dict]:
    import torch

    from .models import BUILTINS
    from .nn import find_laws

    rows = []
    for name in tqdm(MODEL_TOUR, desc="models", disable=not progress, leave=False):
        b = BUILTINS[name]
        torch.manual_seed(0)
        result = find_laws(b.build(), b.example(), b.loss, name=name)
        rows.append({"label": f"nn: {name}", "D": result.D, "num_laws": result.numeric_laws,
                     "known_laws": result.named_laws, "expected": result.numeric_laws,
                     "claim": "named laws == D - dim Lie (loss grads)",
                     "pass": result.named_laws == result.numeric_laws, "seconds": round(result.seconds, 3)})
    return rows


def run_tour(progress: bool = False) -> list[dict]:
    rows = []
    for make, opts, claim, expected in tqdm(TOUR, desc="tour", disable=not progress, leave=False):
        arch = make()
        result = count(arch, **opts)
        ok = result.num_laws == expected and (result.known_laws in (None, expected) or "Ex 4.8" in claim)
        rows.append({"label": arch.label, "fields": result.as_dict()["fields"], "flow": result.flow,
                     "D": result.lie.D, "num_laws": result.num_laws, "known_laws": result.known_laws,
                     "expected": expected, "claim": claim, "pass": ok,
                     "seconds": round(result.seconds, 4)})
    return rows + run_model_tour(progress)
