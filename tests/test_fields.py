"""Field sources against dense Jacobians (brute force)."""

import numpy as np
import pytest
import torch
from torch.func import jacrev

from conslaw import catalog
from conslaw.catalog.relu import path_coefficients, path_lifting, path_pairing
from conslaw.fields import ModelFields, ReparamFields, SignFields


def dense_phi_jacobian(arch, theta):
    return jacrev(lambda t: arch.phi(arch.space.unflatten(t)).reshape(-1))(theta)


@pytest.mark.parametrize("arch", [catalog.linear(3, 2, 4), catalog.relu(2, 3, 2, bias=True),
                                  catalog.attention(3, 2, 2), catalog.conv((1, 2, 1), 4, (2, 2), stride=2)])
def test_reparam_field_equals_dense_jacobian_transpose(arch):
    gen = torch.Generator().manual_seed(0)
    theta = arch.space.sample(generator=gen)
    source = ReparamFields(arch.space, arch.phi)
    a = source.sample(5, gen)
    expected = a @ dense_phi_jacobian(arch, theta)
    torch.testing.assert_close(source.evaluate(theta, a), expected, rtol=1e-12, atol=1e-12)


def test_model_field_equals_dense_jacobian_transpose():
    arch = catalog.attention(3, 2, 2, heads=2)
    gen = torch.Generator().manual_seed(1)
    theta = arch.space.sample(generator=gen)
    source = ModelFields(arch.space, arch.model, arch.sample_input)
    xs, ws = source.sample(4, gen)
    for k in range(4):
        jac = jacrev(lambda t, k=k: arch.model(arch.space.unflatten(t), xs[k, 0]))(theta)
        expected = torch.einsum("ij,ijd->d", ws[k, 0], jac)
        torch.testing.assert_close(source.field(theta, (xs[k], ws[k])), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
def test_rank_one_path_pairing_equals_dense_path_lifting(bias):
    widths = [3, 4, 2, 3]
    arch = catalog.relu(*widths, bias=bias)
    gen = torch.Generator().manual_seed(2)
    params = arch.space.unflatten(arch.space.sample(generator=gen))
    c = {k: v[0] for k, v in path_coefficients(widths, bias)(1, gen).items()}
    dense = path_lifting(params, 3, bias)
    # the same rank-one coefficient tensor, built densely
    a = [torch.einsum("i,j,k,l->lkji", c["w0"], c["w1"], c["w2"], c["w3"]).reshape(-1)]
    if bias:
        a.append(torch.einsum("j,k,l->lkj", c["b1_1"], c["b1_2"], c["b1_3"]).reshape(-1))
        a.append(torch.einsum("k,l->lk", c["b2_2"], c["b2_3"]).reshape(-1))
    torch.testing.assert_close(path_pairing(params, c, 3, bias), torch.dot(dense, torch.cat(a)))


def test_path_lifting_entries_are_products_along_paths():
    arch = catalog.relu(2, 2, 2, bias=True)
    params = arch.space.unflatten(arch.space.sample(generator=torch.Generator().manual_seed(3)))
    phi = path_lifting(params, 2, True)
    # input path i0 -> i1 -> i2 is entry (i2, i1, i0) of the first block
    assert phi[:8].reshape(2, 2, 2)[1, 0, 1] == params["W2"][1, 0] * params["W1"][0, 1]
    assert phi[8:].reshape(2, 2)[0, 1] == params["W2"][0, 1] * params["b1"][1]


def test_conv_model_is_the_circular_convolution_of_eq16():
    arch = catalog.conv((2, 3, 2), 5, (3, 2))
    gen = torch.Generator().manual_seed(4)
    params = arch.space.unflatten(arch.space.sample(generator=gen))
    x = torch.randn(2, 5, generator=gen)
    u, v, xn = params["u"].numpy(), params["v"].numpy(), x.numpy()
    hidden = np.zeros((3, 5))
    for j in range(3):
        for s in range(5):
            hidden[j, s] = max(0.0, sum(v[j, i, t] * xn[i, (s + t) % 5] for i in range(2) for t in range(3)))
    out = np.zeros((2, 5))
    for k in range(2):
        for o in range(5):
            out[k, o] = sum(u[k, j, t] * hidden[j, (o - t) % 5] for j in range(3) for t in range(2))
    np.testing.assert_allclose(arch.model(params, x).numpy(), out, rtol=1e-12, atol=1e-12)


def test_sign_fields_are_signs_and_have_zero_derivative():
    arch = catalog.linear(2, 2, 2)
    gen = torch.Generator().manual_seed(5)
    theta = arch.space.sample(generator=gen)
    source = SignFields(ReparamFields(arch.space, arch.phi))
    a = source.sample(3, gen)
    values = source.evaluate(theta, a)
    assert set(values.unique().tolist()) <= {-1.0, 0.0, 1.0}
    _, tangent = torch.func.jvp(lambda t: source.field(t, a[0]), (theta,), (torch.ones_like(theta),))
    assert torch.count_nonzero(tangent) == 0
