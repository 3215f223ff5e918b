"""The eps re-check (conslaw.nn.eps_check): eps-broken scale laws told apart from wrong laws.

y = BN(W x) with unit 0 of W scaled by 1e-3: var_0 ~ 1e-6 |W_0|^2 is below BatchNorm's eps = 1e-5, so
the scale law |W_0|^2 is broken by O(eps / var_0) ~ 1: its residual passes 1e-2. At eps x 1e-12 it is at
round-off: approximate (eps is its whole cause). A law declared with the same cause that does not hold
(a row of the last Linear, which no normalization reads) stays failed.
"""

import torch
from torch import nn

from conslaw import find_laws
from conslaw.laws import balance_law, unit_slot
from conslaw.models import seeded
from conslaw.nn.analysis import analyse
from conslaw.nn.eps_check import recheck_eps, shrunk_eps
from conslaw.nn.status import check_laws


def model():
    def build():
        m = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        with torch.no_grad():
            m[0].weight[0].mul_(1e-3)
        return m
    return seeded(build, 0)


X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))


def test_a_low_variance_unit_is_approximate_after_the_recheck():
    result = find_laws(model(), X, "cross_entropy", numeric=False)
    law = next(c for c in result.laws if c.law.name.startswith("0[0] "))
    assert law.status == "approximate" and law.max_residual > 1e-2  # above the threshold, eps-caused
    assert any(n.startswith("eps re-check: 1 of 1 laws") for n in result.notes)
    others = [c for c in result.laws if c.family == "scale-invariance" and c is not law]
    assert len(others) == 3 and all(c.max_residual < 1e-2 for c in others)


def test_a_wrong_law_with_an_eps_cause_stays_failed():
    analysis = analyse(model(), X, "cross_entropy")
    space, fields, theta = analysis.space, analysis.fields, analysis.theta
    wrong = balance_law("3[0] (bogus)", [unit_slot(space, "3.weight", 0, 0)], [], family="scale-invariance",
                        module="3", approximate_cause="BatchNorm1d eps")
    draws = [(theta, fields.sample(2, torch.Generator().manual_seed(1)))]
    checked = check_laws([wrong], [(t, fields.evaluate(t, ps)) for t, ps in draws])
    assert checked[0].status == "failed"
    out, note = recheck_eps(checked, analysis.model, fields, draws)
    assert out[0].status == "failed" and "stay failed" in note
    eps = analysis.model[1].eps
    with shrunk_eps(analysis.model) as changed:
        assert changed == 1 and analysis.model[1].eps == eps * 1e-12
    assert analysis.model[1].eps == eps  # restored
