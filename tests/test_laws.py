"""Every catalog law: orthogonal to the fields at random theta, gradient equal to autograd."""

import pytest
import torch

from conslaw import catalog

ARCHS = [
    lambda: catalog.linear(3, 4, 2), lambda: catalog.linear(2, 3, 2, 4),
    lambda: catalog.relu(3, 4, 2), lambda: catalog.relu(2, 3, 4, 2, bias=True),
    lambda: catalog.conv((2, 3, 2), 6, (3, 2)), lambda: catalog.conv((1, 2, 2), 6, (2, 3), stride=2),
    lambda: catalog.attention(3, 2, 2), lambda: catalog.attention(3, 4, 4, heads=2),
    lambda: catalog.softmax(3, 4), lambda: catalog.resnet(3, 2, 3),
]


@pytest.mark.parametrize("make", ARCHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_catalog_laws_are_orthogonal_to_sampled_fields(make, seed):
    arch = make()
    theta = arch.space.sample(generator=torch.Generator().manual_seed(seed))
    for kind in ["reparam", "model"] if arch.phi is not None else ["model"]:
        residuals = arch.law_set().residuals(arch.fields(kind), theta, n=128)
        assert residuals.max() < 1e-12, (kind, residuals.max())


@pytest.mark.parametrize("make", ARCHS)
def test_closed_form_gradients_equal_autograd(make):
    arch = make()
    theta = arch.space.sample(generator=torch.Generator().manual_seed(2))
    for law in arch.law_set():
        torch.testing.assert_close(law.grad(theta), law.autograd(theta), rtol=1e-13, atol=1e-13)


def test_law_values_match_the_paper_formulas():
    arch = catalog.attention(3, 2, 4, heads=2)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(3))
    p = arch.space.unflatten(theta)
    q, k = p["Q"][2:4], p["K"][2:4]
    values = {law.name: law.value(theta) for law in arch.law_set()}
    expected = q @ q.T - k @ k.T
    torch.testing.assert_close(values["head 1: Q Q^T - K K^T[2,3]"], expected[0, 1])
    relu = catalog.relu(2, 3, 2, bias=True)
    theta = relu.space.sample(generator=torch.Generator().manual_seed(4))
    p = relu.space.unflatten(theta)
    value = relu.law_set()[1].value(theta)
    torch.testing.assert_close(value, p["W2"][:, 1].square().sum() - p["W1"][1].square().sum() - p["b1"][1] ** 2)
    assert relu.law_set()[1].formula == "|W2[:,1]|^2 - |W1[1,:]|^2 - b1[1]^2"


def test_a_non_law_is_detected_by_the_residual():
    arch = catalog.relu(3, 4, 2)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(5))
    from conslaw.laws import LawSet, QuadraticLaw

    idx_in, idx_out = arch.space.indices("W1"), arch.space.indices("W2")
    wrong = QuadraticLaw.inner_difference("sum of norms", "|W2[:,0]|^2 + |W1[0,:]|^2", ("W1", "W2"),
                                          plus=[(idx_out[:, 0], idx_out[:, 0]), (idx_in[0], idx_in[0])], minus=[])
    assert LawSet(arch.space, [wrong]).residuals(arch.fields(), theta).max() > 1e-3


def test_sign_flow_law_is_abs_difference():
    arch = catalog.linear(1, 1, 1)
    theta = torch.tensor([-0.7, 1.3])
    (law,) = arch.law_set("sign")
    assert law.value(theta).item() == pytest.approx(1.3 - 0.7)
    residual = arch.law_set("sign").residuals(arch.fields(flow="sign"), theta)
    assert residual.max() == 0.0
