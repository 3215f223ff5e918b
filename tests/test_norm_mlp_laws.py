"""RMSNorm, gated MLPs (SwiGLU / GeGLU) and plain smooth MLPs: named laws vs the engine (issue 12, item 4).

Every count is compared with the number written here (measured with the Lie engine at a generic point and
explained in the comments); outside checks apply the symmetry to the parameters and run plain SGD.
"""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _sgd_drift import drift_at_lr_and_2lr
from conslaw import find_laws
from conslaw.models import seeded


class RMSHead(nn.Module):
    """fc1 -> RMSNorm -> fc2 (6 -> 8 -> 3)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 8), norm, nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)), as Llama's MLP."""

    def __init__(self, dim: int, hidden: int, act: nn.Module, bias: bool = False) -> None:
        super().__init__()
        self.gate, self.up = nn.Linear(dim, hidden, bias=bias), nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.act = act

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


class TinyLlama(nn.Module):
    """Embedding, one pre-norm SwiGLU block (no attention), final RMSNorm, mean over tokens, head."""

    def __init__(self, norm, vocab: int = 12, dim: int = 6, hidden: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm1, self.mlp, self.norm_f = norm(dim), GatedMLP(dim, hidden, nn.SiLU()), norm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        x = self.embed(ids)
        x = x + self.mlp(self.norm1(x))
        return self.head(self.norm_f(x).mean(1))


X = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
IDS = torch.randint(0, 12, (4, 4), generator=torch.Generator().manual_seed(0))


def counts(result):
    out = {}
    for c in result.laws:
        out[(c.family, c.status)] = out.get((c.family, c.status), 0) + 1
    return out


@pytest.mark.parametrize("eps,affine,exact,approximate", [
    (1e-5, True, 17, 1),   # fc2 softmax translations 8 + 1, g_k vs fc2[:, k] 8; fc1 scale approximate
    (1e-5, False, 9, 1),   # no weight: no rescaling through the norm
    (0.0, True, 18, 0),    # the scale law is exact at eps = 0
    (0.0, False, 10, 0),
])
def test_rmsnorm_scale_and_weight_laws_and_no_translation(eps, affine, exact, approximate):
    model = seeded(lambda: RMSHead(nn.RMSNorm(8, eps=eps, elementwise_affine=affine)), 0)
    result = find_laws(model, X, "cross_entropy")
    c = counts(result)
    assert c[("scale-invariance", "exact" if eps == 0 else "approximate")] == 1
    assert c.get(("rescaling", "exact"), 0) == (8 if affine else 0)
    # RMSNorm keeps the mean: nothing but the softmax translations of fc2
    assert [law.module for law in result.laws if law.family.startswith("translation")] == ["fc2"] * 9
    assert (result.named_laws, result.approximate_laws, result.lie_laws) == (exact, approximate, exact)
    assert result.numeric_gap > 1e3


def test_a_shift_into_rmsnorm_changes_the_model_but_a_scale_does_not():
    """Outside check of the claims above: fc1's output shifted by c 1 changes the logits (so no translation
    law), scaled by c leaves them unchanged at eps = 0."""
    model = seeded(lambda: RMSHead(nn.RMSNorm(8, eps=0.0)), 0).double()
    x = X.double()
    before = model(x)
    with torch.no_grad():
        model.fc1.bias.add_(0.5)
    assert (model(x) - before).abs().max() > 1e-2
    with torch.no_grad():
        model.fc1.bias.sub_(0.5)
        model.fc1.weight.mul_(3.0)
        model.fc1.bias.mul_(3.0)
    assert torch.allclose(model(x), before, atol=1e-13, rtol=0)


def _llama_norms():
    norms = [("nn.RMSNorm", lambda eps: (lambda d: nn.RMSNorm(d, eps=eps)))]
    if importlib.util.find_spec("transformers") is not None:
        from conslaw.vision import import_torchvision

        import_torchvision()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        norms.append(("LlamaRMSNorm", lambda eps: (lambda d: LlamaRMSNorm(d, eps=eps))))
    return norms


@pytest.mark.parametrize("norm_name,norm", _llama_norms())
@pytest.mark.parametrize("eps,exact,approximate", [(1e-6, 24, 1), (0.0, 25, 0)])
def test_tiny_llama_block_named_equals_the_engine(norm_name, norm, eps, exact, approximate):
    result = find_laws(seeded(lambda: TinyLlama(norm(eps)), 0), IDS, "cross_entropy")
    c = counts(result)
    assert c[("rescaling (gated unit)", "exact")] == 5  # up[i] vs down[:, i], i < 5
    assert c[("rescaling", "exact")] == 6 + 6  # norm1.weight[k] vs gate, up columns k; norm_f.weight[k] vs head
    assert c[("scale-invariance", "exact" if eps == 0 else "approximate")] == 1  # embed + down, read by RMSNorms
    assert c[("translation", "exact")] == 6 + 1  # the head before softmax; none into the RMSNorms
    assert (result.named_laws, result.approximate_laws, result.lie_laws) == (exact, approximate, exact)


@pytest.mark.parametrize("act", [nn.SiLU(), nn.GELU()], ids=["swiglu", "geglu"])
def test_gated_mlp_up_down_rescaling(act):
    model = seeded(lambda: nn.Sequential(GatedMLP(6, 5, act, bias=True), nn.Linear(6, 3)), 0)
    result = find_laws(model, X, "cross_entropy")
    c = counts(result)
    assert c[("rescaling (gated unit)", "exact")] == 5
    # down -> the last Linear is a linear stream: 6 rescalings and 15 mixings; 6 + 1 softmax translations
    assert (c[("rescaling", "exact")], c[("mixing (linear stream)", "exact")], c[("translation", "exact")]) == \
        (6, 15, 7)
    assert result.named_laws == result.lie_laws == 33


def test_gated_symmetry_and_sgd_drift():
    """up row i x 2 with down column i / 2 leaves the model unchanged, the gate row does not; under plain
    float64 SGD the up/down law moves ~4x from lr to 2 lr (an exact law's discretisation drift) and |up|^2 ~2x."""
    def build():
        return seeded(lambda: nn.Sequential(GatedMLP(6, 5, nn.SiLU(), bias=True), nn.Linear(6, 3)), 0).double()

    model, x = build(), X.double()
    before = model(x)
    with torch.no_grad():
        model[0].up.weight[2].mul_(2.0)
        model[0].up.bias[2].mul_(2.0)
        model[0].down.weight[:, 2].div_(2.0)
    assert torch.allclose(model(x), before, atol=1e-13, rtol=0)
    with torch.no_grad():
        model[0].gate.weight[2].mul_(2.0)
        model[0].down.weight[:, 2].div_(2.0)
    assert (model(x) - before).abs().max() > 1e-3

    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(2))

    def observe(m):  # the up/down law of unit 1, |up.weight|^2 (not conserved)
        up, down = m[0].up, m[0].down
        return torch.stack([up.weight[1].square().sum() + up.bias[1] ** 2 - down.weight[:, 1].square().sum(),
                            up.weight.square().sum()])

    (l1, c1), (l2, c2) = drift_at_lr_and_2lr(build, lambda m, _: F.cross_entropy(m(x), y), range(20), observe, 1e-3)
    assert abs(l2 / l1) == pytest.approx(4.0, rel=0.15)
    assert abs(c2 / c1) == pytest.approx(2.0, rel=0.15)
    assert abs(l1) < 0.1 * abs(c1)


@pytest.mark.parametrize("act", [nn.GELU(), nn.SiLU(), nn.Tanh()], ids=["gelu", "silu", "tanh"])
def test_smooth_activations_have_no_rescaling_law(act):
    model = seeded(lambda: nn.Sequential(nn.Linear(6, 8), act, nn.Linear(8, 3)), 0)
    result = find_laws(model, X, "cross_entropy")
    assert not [law for law in result.laws if "rescaling" in law.family or "mixing" in law.family]
    assert result.named_laws == result.lie_laws == 9  # only the softmax translations of the last Linear


class LayerScaleBlock(nn.Module):
    """x + gamma * fc2(gelu(fc1(ln(x)))), then the head on the token mean (a CaiT / timm ViT block's MLP half)."""

    def __init__(self, module: bool = False) -> None:
        super().__init__()
        self.ln, self.fc1, self.fc2, self.head = nn.LayerNorm(6), nn.Linear(6, 8), nn.Linear(8, 6), nn.Linear(6, 3)
        if module:
            from timm.layers import LayerScale

            self.ls = LayerScale(6, init_values=0.1)
        else:
            self.gamma = nn.Parameter(torch.full((6,), 0.1))

    def forward(self, x):
        y = self.fc2(F.gelu(self.fc1(self.ln(x))))
        h = x + (self.ls(y) if hasattr(self, "ls") else self.gamma * y)
        return self.head(h.mean(1))


class ConvLayerScale(nn.Module):
    """ConvNeXt's inline layer scale: x + conv2(tanh(conv1(x))).mul(gamma.reshape(1, -1, 1, 1))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1), nn.Linear(3, 2)
        self.gamma = nn.Parameter(torch.full((3,), 0.5))

    def forward(self, x):
        h = x + self.conv2(torch.tanh(self.conv1(x))).mul(self.gamma.reshape(1, -1, 1, 1))
        return self.head(h.mean((2, 3)))


def _timm_available() -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    from conslaw.vision import import_torchvision

    import_torchvision()
    return True


@pytest.mark.parametrize("module", [False, pytest.param(True, marks=pytest.mark.skipif(
    not _timm_available(), reason="timm is not installed"))], ids=["inline", "timm-LayerScale"])
def test_layer_scale_rescaling(module):
    x = torch.randn(6, 4, 6, generator=torch.Generator().manual_seed(0))
    result = find_laws(seeded(lambda: LayerScaleBlock(module), 0), x, "cross_entropy")
    c = counts(result)
    # |fc2[k,:]|^2 + fc2.bias_k^2 - gamma_k^2 (6), ln.weight_k -> fc1 (6), head softmax translations (6 + 1)
    assert (c[("rescaling (layer scale)", "exact")], c[("rescaling", "exact")], c[("translation", "exact")]) == \
        (6, 6, 7)
    assert result.named_laws == result.lie_laws == 19


def test_conv_layer_scale_rescaling():
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    result = find_laws(seeded(ConvLayerScale, 0), x, "cross_entropy")
    assert counts(result)[("rescaling (layer scale)", "exact")] == 3
    assert result.named_laws == result.lie_laws == 3 + 4  # + the head's softmax translations: 3 columns + bias


@pytest.mark.skipif(not _timm_available(), reason="timm is not installed")
@pytest.mark.parametrize("eps,exact,approximate", [(1e-6, 26, 1), (0.0, 27, 0)])
def test_timm_layernorm2d_then_1x1_conv(eps, exact, approximate):
    """ConvNeXt's stem and downsampling pattern: conv -> LayerNorm2d (channels, at every position) -> conv."""
    from timm.layers import LayerNorm2d

    model = seeded(lambda: nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8, eps=eps), nn.Conv2d(8, 4, 1),
                                         nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), 0)
    result = find_laws(model, torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0)), "cross_entropy")
    c = counts(result)
    assert c[("rescaling", "exact")] == 8  # LayerNorm2d gamma_k, beta_k vs the 1x1 conv's input channel k
    assert c[("translation (into LayerNorm)", "exact")] == 3 * 2 * 2 + 1  # sum_o W[o,c,i,j] per (c,i,j); bias
    assert c[("scale-invariance", "exact" if eps == 0 else "approximate")] == 1
    assert (result.named_laws, result.approximate_laws, result.lie_laws) == (exact, approximate, exact)


@pytest.mark.slow  # the torch.export front end on a Hugging Face model: ~20 s on 2 cores
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_hf_llama_names_its_rmsnorm_and_swiglu_laws():
    _timm_available()  # the torchvision shim, which transformers imports
    import transformers

    config = transformers.LlamaConfig(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      hidden_size=8, intermediate_size=16, vocab_size=16, max_position_embeddings=8)
    model = seeded(lambda: transformers.LlamaForCausalLM(config).eval(), 0)
    ids = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(0))
    result = find_laws(model, {"input_ids": ids, "attention_mask": torch.ones(2, 5, dtype=torch.long)},
                       "cross_entropy", numeric=False, batches=2)
    table = {(r["family"], r["module"]): (r["exact"], r["approximate"]) for r in result.family_table()}
    assert table[("rescaling (gated unit)", "model.layers.0.mlp.up_proj")] == (16, 0)
    for norm in ("model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm", "model.norm"):
        assert table[("rescaling", norm)] == (8, 0)  # the RMSNorm weight against the projections that read it
    assert table[("scale-invariance", "model.embed_tokens")] == (0, 1)  # the residual stream, read by RMSNorms
    assert not [c for c in result.laws if c.family.startswith("translation") and c.module != "lm_head"]
    assert not [c for c in result.laws if c.status == "failed"]
