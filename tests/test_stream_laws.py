"""Laws of LayerNorm-read streams with linear readers (conslaw.nn.stream_mixing): named vs the engine.

The built-in nn.TransformerEncoder classifiers (E = 4, 2 heads, hidden 6, 4 tokens of 10, 2 classes, D = 220).
Numbers measured at a generic point near the initialisation (find_laws counts there). Outside checks: the
symmetry x -> (I + t 1 1^T) x applied to the parameters leaves the logits unchanged, and plain float64 SGD at lr and
2 lr moves the new quadratic laws by ~4x (lr^2) and |embed.weight|^2 by ~2x (lr).
"""

import pytest
import torch
import torch.nn.functional as F

from _sgd_drift import drift_at_lr_and_2lr, law_values
from conslaw import find_laws
from test_transformer_laws import TOKENS, family_counts, transformer


@pytest.mark.parametrize("norm_first,eps,exact,approximate,numeric", [
    (False, 0.0, 50, 0, 50),     # 49 named before + the input-stream mixing law
    (False, None, 48, 2, 48),    # the norm1 / norm2 input scales: broken by eps, not counted by the engine
    (True, 0.0, 46, 0, 46),      # 39 named before + mixing + stream scale + 5 uniform shifts
    (True, None, 45, 1, 45),
])
def test_encoder_builtins_named_equals_the_engine(norm_first, eps, exact, approximate, numeric):
    result = find_laws(transformer(eps=eps, norm_first=norm_first), TOKENS, "cross_entropy")
    counts = family_counts(result)
    assert counts[("mixing (LayerNorm stream)", "exact")] == 1
    if norm_first:
        assert counts[("translation (uniform shifts)", "exact")] == 5  # 4 position rows and linear2.bias vs out_proj
    assert (result.named_laws, result.approximate_laws, result.lie_laws) == (exact, approximate, numeric)
    assert result.unnamed_laws == 0 and result.as_dict()["unnamed_laws"] == 0
    # at eps = 0 a clear gap; at eps > 0 the eps-broken scale directions are small singular values that narrow it
    assert result.numeric_gap > (1e3 if eps == 0.0 else 1e2)
    assert not [law for law in result.laws if law.status == "failed"]


def _mix(model, t: float) -> None:
    """x -> A x, A = I + t 1 1^T, on the post-LN input stream: E, P rows and out_proj by A, in_proj by A^{-1}."""
    E = model.embed.embedding_dim
    A = torch.eye(E, dtype=torch.float64) + t * torch.ones(E, E, dtype=torch.float64)
    attn = model.encoder.layers[0].self_attn
    with torch.no_grad():
        model.embed.weight.copy_(model.embed.weight @ A.T)
        model.position.copy_(model.position @ A.T)
        attn.in_proj_weight.copy_(attn.in_proj_weight @ torch.linalg.inv(A))
        attn.out_proj.weight.copy_(A @ attn.out_proj.weight)
        attn.out_proj.bias.copy_(A @ attn.out_proj.bias)


def test_the_mixing_symmetry_leaves_the_post_ln_model_unchanged():
    model = transformer().double().eval()
    before = model(TOKENS)
    _mix(model, 0.7)
    assert torch.allclose(model(TOKENS), before, atol=1e-12, rtol=0)
    model2 = transformer().double().eval()  # a general A (not I + t 1 1^T) does change it: the check can fail
    with torch.no_grad():
        model2.embed.weight.mul_(torch.tensor([1.0, 1.5, 1.0, 1.0], dtype=torch.float64))
    assert not torch.allclose(model2(TOKENS), before, atol=1e-6)


def _law(result, family, module=None):
    return next(c.law for c in result.laws if c.family == family and c.status == "exact"
                and (module is None or c.module == module))


@pytest.mark.parametrize("norm_first", [False, True])
def test_new_laws_under_plain_sgd(norm_first):
    """float64 SGD, 20 steps, lr and 2 lr from one start: a quadratic exact law moves ~4x, |E|^2 ~2x,
    a linear exact law stays at round-off."""
    result = find_laws(transformer(eps=0.0, norm_first=norm_first).double(), TOKENS, "cross_entropy", numeric=False)
    quadratic = [_law(result, "mixing (LayerNorm stream)")]
    linear = []
    if norm_first:
        quadratic.append(_law(result, "scale-invariance", "encoder"))
        linear = [c.law for c in result.laws if c.family == "translation (uniform shifts)"]
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 10, (8, 4), generator=gen), torch.randint(0, 2, (8,), generator=gen))
               for _ in range(20)]

    def observe(m):  # the quadratic laws, the linear ones, |embed.weight|^2 (not conserved)
        return torch.cat([law_values(quadratic + linear)(m), m.embed.weight.square().sum().reshape(1)])

    small, large = drift_at_lr_and_2lr(lambda: transformer(eps=0.0, norm_first=norm_first),
                                       lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches, observe, 1e-2)
    q = len(quadratic)
    for a, b in zip(small[:q], large[:q], strict=True):
        assert abs(b / a) == pytest.approx(4.0, rel=0.15)
        assert abs(a) < 0.1 * abs(small[-1])  # far smaller than the drift of a quantity that is not conserved
    assert all(abs(float(d)) < 1e-13 for d in torch.cat([small[q:-1], large[q:-1]]))
    assert abs(large[-1] / small[-1]) == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("eps,exact,approximate", [(None, 68, 1), (0.0, 69, 0)])
def test_pre_ln_with_a_final_norm(eps, exact, approximate):
    """nn.TransformerEncoder(norm=LayerNorm): the residual stream is read only by LayerNorms, so each unit of each
    writer shifts on its own: E rows 10, P rows 4, out_proj 4 columns + bias, linear2 6 columns + bias (26; one
    depends on the summed-embedding laws), and the whole stream scales (approximate)."""
    from torch import nn

    from conslaw.models import seeded

    def build():
        model = transformer(norm_first=True)
        model.encoder.norm = nn.LayerNorm(4)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and eps is not None:
                m.eps = eps
        return model

    result = find_laws(seeded(build, 0), TOKENS, "cross_entropy")
    c = family_counts(result)
    assert c[("translation (into LayerNorm)", "exact")] == 26
    assert c[("scale-invariance", "exact" if eps == 0.0 else "approximate")] == 1
    assert (result.named_laws, result.approximate_laws, result.lie_laws) == (exact, approximate, exact)
    assert result.numeric_gap > 1e3


@pytest.mark.slow  # D = 374: about 15 s each on 2 cores
@pytest.mark.parametrize("norm_first,eps,exact,approximate", [
    (False, None, 82, 4),  # input scales of norm1 (x2: E + P, then norm2 of layer 0) and norm2 (x2): approximate
    (False, 0.0, 86, 0),
    (True, None, 77, 1),   # 7 uniform shifts: 4 position rows, linear2.bias of layer 0, out_proj and linear2 of 1
    (True, 0.0, 78, 0),
])
def test_two_layer_encoders_named_equals_the_engine(norm_first, eps, exact, approximate):
    from torch import nn

    from conslaw.models import TransformerClassifier, seeded

    def build():
        model = TransformerClassifier(vocab=10, tokens=4, dim=4, heads=2, hidden=6, layers=2, norm_first=norm_first)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and eps is not None:
                m.eps = eps
        return model

    result = find_laws(seeded(build, 0), TOKENS, "cross_entropy")
    assert (result.named_laws, result.approximate_laws, result.lie_laws) == (exact, approximate, exact)
    if eps == 0.0:
        assert result.numeric_gap > 1e3
    # at the default eps the eps-broken near-laws put singular values near the threshold: the gap of the
    # post-LN 2-layer encoder measured 1.5, 6.5, 30 and 8e3 with the thread count and chunk size (the count,
    # 82, never moved), so only the count is asserted there; count() warns about such gaps


@pytest.mark.parametrize("numeric,named,approximate,unnamed", [
    (48, 48, 2, 0),   # eps-broken laws: the engine does not count them
    (50, 48, 2, 0),   # eps so small that the engine counts them as laws
    (51, 48, 2, 1),   # one law the families do not know: listed, never silent
    (47, 48, 0, -1),  # more named than counted: a wrong law or a wrong count, shown as negative
])
def test_unnamed_laws_is_what_neither_exact_nor_approximate_laws_explain(numeric, named, approximate, unnamed):
    from conslaw.nn.find import ModelLaws

    result = ModelLaws(model_name="m", D=100, laws=[], named_laws=named, lie_laws=numeric, uncovered_params=[],
                       loss="mse", seconds=0.0, approximate_laws=approximate)
    assert result.unnamed_laws == result.as_dict()["unnamed_laws"] == unnamed
