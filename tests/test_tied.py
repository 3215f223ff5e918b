"""Tied parameters: one tensor, one coordinate block, named by its canonical name; what is not named is counted.

Model: ids -> embed (E) -> mean -> fc -> ReLU -> head, with head.weight = embed.weight (GPT-2's tied LM head
in miniature, traced by torch.fx). No law may name ``head.weight``, and no law of the untied model (the
embed -> fc stream, which the tie breaks) may be reported. The engine counts 4 laws that no family names:
per hidden unit j, the ReLU rescaling of unit j also rescales head's column j = embed's column j, which
fc's input column j must undo, so h_j = |fc.weight[j,:]|^2 + |fc.weight[:,j]|^2 + fc.bias[j]^2
- |embed.weight[:,j]|^2 (the entry fc.weight[j,j] counted twice). They are listed as unnamed, and checked
here against the loss gradient directly.
"""

import torch
import torch.nn.functional as F
from torch import nn

from conslaw.models import seeded
from conslaw.nn import find_laws


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.fc(self.embed(ids).mean(1))))


IDS = torch.randint(0, 10, (4, 3), generator=torch.Generator().manual_seed(0))


def test_tied_weight_is_one_block_and_unnamed_laws_are_counted():
    model = seeded(Tied, 0)
    result = find_laws(model, IDS, "cross_entropy")
    assert result.D == 40 + 16 + 4  # embed (= head) once, fc weight and bias
    assert all(p in ("embed.weight", "fc.weight", "fc.bias") for c in result.laws for p in c.law.params)
    assert not [c for c in result.laws if c.status == "failed"] and not result.warnings
    assert any("head.weight = embed.weight" in n for n in result.notes)
    d = result.as_dict()
    assert (d["named_laws"], d["numeric_laws"], d["unnamed_laws"]) == (0, 4, 4)


def test_the_four_unnamed_laws_are_conserved():
    model = seeded(Tied, 0).double()
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        ids = torch.randint(0, 10, (6, 3), generator=gen)
        y = torch.randint(0, 10, (6,), generator=gen)
        model.zero_grad()
        F.cross_entropy(model(ids), y).backward()
        w, b, e = (p.detach() for p in (model.fc.weight, model.fc.bias, model.embed.weight))
        gw, gb, ge = model.fc.weight.grad, model.fc.bias.grad, model.embed.weight.grad
        for j in range(4):
            # <grad h_j, grad L> / 2 with h_j as in the module docstring
            inner = (w[j] * gw[j]).sum() + (w[:, j] * gw[:, j]).sum() + b[j] * gb[j] - (e[:, j] * ge[:, j]).sum()
            scale = gw.norm() * w.norm() + ge.norm() * e.norm()
            assert abs(float(inner)) < 1e-12 * float(scale)
