"""Counts of the paper's theorems, found by the Lie engine without being told."""

import pytest
import torch

from conslaw import catalog
from conslaw.count import count
from conslaw.lie import lie_trace_dimension


@pytest.mark.parametrize("n, r, m", [(3, 2, 4), (2, 3, 2), (4, 4, 1), (1, 2, 1), (5, 3, 2), (2, 5, 3)])
@pytest.mark.parametrize("fields", ["reparam", "model"])
def test_linear_two_layers_has_r_r_plus_one_over_two_laws(n, r, m, fields):
    # Prop 3.5 (linear): widths input first [m, r, n], r <= n + m
    res = count(catalog.linear(m, r, n), fields=fields)
    assert res.num_laws == res.known_laws == r * (r + 1) // 2


# 1-D input without bias and model fields is left out: every hyperplane is {0}, outside
# Prop 3.5's set of parameters (the next test shows what happens there)
RELU_CASES = [(w, b, f) for w in [(3, 4, 2), (2, 3, 3), (4, 2, 4), (1, 3, 1)] for b in (False, True)
              for f in ("reparam", "model") if not (w[0] == 1 and not b and f == "model")]


@pytest.mark.parametrize("widths, bias, fields", RELU_CASES)
def test_relu_two_layers_has_one_law_per_hidden_neuron(widths, bias, fields):
    res = count(catalog.relu(*widths, bias=bias), fields=fields)
    assert res.num_laws == res.known_laws == widths[1]


def test_relu_with_coinciding_hyperplanes_has_the_laws_of_merged_linear_layers():
    # 1-D input, no bias: the neurons with v_k > 0 (resp. < 0) are active together and act as
    # one linear layer [1, a, 1], which has 3 laws for a = 2 and 1 for a = 1 (Prop 3.5 linear).
    arch = catalog.relu(1, 3, 1)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    sides = (arch.space.unflatten(theta)["W1"] > 0).sum().item()
    assert sorted([sides, 3 - sides]) == [1, 2]
    res = count(arch, fields="model", theta=theta)
    assert res.num_laws == 3 + 1 and count(arch, theta=theta).num_laws == 3


def test_model_fields_miss_rare_regions_only_with_too_few_inputs():
    # relu [2, 5, 3] at seed 0 has a linear region of 1 degree: the default sampling misses it
    # (6 laws, an upper bound), ten times more inputs find it (5 laws, Prop 3.5).
    arch = catalog.relu(2, 5, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    source = arch.fields("model")
    source.oversample = 30
    assert lie_trace_dimension(source, theta).num_laws == 5


@pytest.mark.parametrize("widths, bias", [((2, 3, 4, 2), False), ((3, 2, 3, 2, 2), True), ((2, 4, 3, 3), True)])
def test_deep_relu_path_lifting_has_one_law_per_hidden_neuron(widths, bias):
    res = count(catalog.relu(*widths, bias=bias))
    assert res.num_laws == res.known_laws == sum(widths[1:-1])


@pytest.mark.parametrize("channels, pixels, filters, stride", [
    ((1, 1, 1), 4, (2, 2), 1), ((2, 3, 2), 6, (3, 2), 1), ((1, 2, 3), 5, (5, 1), 1),
    ((2, 2, 1), 6, (2, 3), 2), ((3, 2, 2), 6, (2, 2), 3), ((1, 4, 1), 4, (4, 4), 2)])
@pytest.mark.parametrize("fields", ["reparam", "model"])
def test_conv_has_c1_laws(channels, pixels, filters, stride, fields):
    # Thm 3.6 / Prop E.3, strided included
    res = count(catalog.conv(channels, pixels, filters, stride), fields=fields)
    assert res.num_laws == res.known_laws == channels[1]


@pytest.mark.parametrize("tokens, dim, d1", [(2, 2, 1), (3, 2, 2), (3, 2, 4), (2, 3, 3), (4, 3, 5)])
@pytest.mark.parametrize("fields", ["reparam", "model"])
def test_one_attention_head_has_d1_d1_plus_one_laws(tokens, dim, d1, fields):
    # Cor 3.9: N >= 2, d1 <= 2E
    res = count(catalog.attention(tokens, dim, d1), fields=fields)
    assert res.num_laws == res.known_laws == d1 * (d1 + 1)


@pytest.mark.parametrize("tokens, dim, d1, heads, found", [(3, 4, 4, 2, 12), (3, 3, 4, 2, 12), (3, 2, 3, 3, 6)])
def test_multi_head_count_equals_per_head_laws_on_these_configurations(tokens, dim, d1, heads, found):
    # Cor 3.10 gives the per-head laws; the paper leaves completeness open. The engine finds
    # no other law on these configurations: num_laws == H * dh (dh + 1), dh = d1 / H.
    res = count(catalog.attention(tokens, dim, d1, heads))
    dh = d1 // heads
    assert res.known_laws == heads * dh * (dh + 1) == found
    assert res.num_laws == found


@pytest.mark.parametrize("classes, inputs", [(2, 1), (3, 4), (5, 2), (4, 6)])
def test_softmax_layer_has_m_laws(classes, inputs):
    res = count(catalog.softmax(classes, inputs))
    assert res.num_laws == res.known_laws == inputs


@pytest.mark.parametrize("make", [lambda: catalog.relu(3, 4, 3, bias=True), lambda: catalog.linear(3, 2, 3),
                                  lambda: catalog.attention(3, 2, 2), lambda: catalog.conv((2, 2, 2), 4, (2, 2))])
def test_residual_block_has_the_same_count_and_laws_as_the_block(make):
    block = make()
    plain = count(block, fields="model")
    skip = count(block.residual(), fields="model")
    assert plain.num_laws == skip.num_laws == plain.known_laws
    theta = block.space.sample(generator=torch.Generator().manual_seed(3))
    # the same closed-form laws, and they are orthogonal to the residual block's fields
    residuals = block.residual().law_set().residuals(block.residual().fields("model"), theta)
    assert residuals.max() < 1e-12


@pytest.mark.parametrize("dim, width", [(2, 1), (3, 2), (2, 3)])
def test_dense_resnet_two_blocks_has_only_block_laws(dim, width):
    res = count(catalog.resnet(dim, width, 2))
    assert res.num_laws == res.known_laws == 2 * width


@pytest.mark.parametrize("n, m, r, laws", [(1, 1, 1, 1), (2, 1, 1, 0), (2, 2, 1, 0), (2, 2, 2, 0), (3, 2, 1, 0),
                                            (2, 3, 3, 0), (1, 1, 2, 3)])
def test_sign_flow_keeps_a_law_only_for_scalar_u_v(n, m, r, laws):
    # App R: |u| - |v| for n = m = r = 1, none for the larger shapes it tests. With n = m = 1
    # (d = 1) every field is +-sign(dphi^T): one direction, D - 1 laws (here r = 2: 3).
    res = count(catalog.linear(m, r, n), flow="sign")
    assert res.num_laws == laws
    if (n, m, r) == (1, 1, 1):
        assert res.known_laws == 1 and res.max_law_residual == 0.0


def test_positive_init_makes_every_parameter_positive():
    arch = catalog.resnet(1, 1, 2)
    theta = arch.space.sample("positive", torch.Generator().manual_seed(0))
    assert (theta > 0).all()


def test_scale_ladder_rung_fits_quickly_on_a_mid_size_network():
    # D = 1150: a mid rung of benchmarks/ladder.py, here to prove chunking works (max_chunk < D)
    arch = catalog.linear(20, 25, 26)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    res = lie_trace_dimension(arch.fields(), theta, max_chunk=256)
    assert res.num_laws == 25 * 26 // 2
