"""find_laws on real nn.Modules: named laws verified at round-off, equal to the Lie engine's count."""

import pytest
import torch
from torch import nn

from conslaw.errors import ConslawError
from conslaw.models import BUILTINS
from conslaw.nn import Handler, HandlerRegistry, find_laws, register_handler


def run(name, **kw):
    b = BUILTINS[name]
    torch.manual_seed(0)
    return find_laws(b.build(), b.example(), b.loss, name=name, **kw)


@pytest.mark.parametrize("name, named", [
    ("mlp", 13),                      # 8 + 5 hidden neurons
    ("cnn", 15),                      # 4 + 5 channels, 5 column sums + bias sum
    ("resnet-block", 13),             # 4 block channels, 4 residual-stream channels, 4 + 1 translation
    ("resnet-block-nobn", 13),
    ("transformer-handwritten", 51),  # stream 6 + 15 mixing, 8 neurons, 12 attention, 3 key biases, 7 translation
])
def test_small_models_named_laws_equal_the_lie_count(name, named):
    result = run(name)
    assert result.named_laws == result.numeric_laws == named
    exact = [law for law in result.laws if law.status == "exact"]
    assert exact and max(law.max_residual for law in exact) < 1e-12
    assert not [law for law in result.laws if law.status == "failed"]


def test_batchnorm_scale_invariance_is_approximate_with_its_cause():
    result = run("resnet-block")
    approx = [law for law in result.laws if law.family == "scale-invariance"]
    assert len(approx) == 12 and all(law.status == "approximate" for law in approx)
    assert all(1e-9 < law.max_residual < 1e-3 for law in approx)
    assert "eps=1e-05" in approx[0].as_dict()["cause"]
    assert result.uncovered_params == []


def test_mlp_laws_read_like_the_paper():
    result = run("mlp")
    formulas = [law.law.formula for law in result.laws]
    assert "|2.weight[:,0]|^2 - |0.weight[0,:]|^2 - 0.bias[0]^2" in formulas
    assert result.uncovered_params == ["4.bias"]


def test_multihead_attention_laws_hold_on_nn_multiheadattention():
    for name in ("transformer", "transformer-prenorm"):
        result = run(name, numeric=False)
        attention = [law for law in result.laws if law.family == "attention"]
        assert len(attention) == 2 * 2 * (2 * 3 // 2)  # 2 heads of dh = 2: 3 (QK) + 3 (VO) entries each
        assert all(law.status == "exact" for law in attention)
        zero = [law for law in result.laws if law.family == "zero-gradient"]
        assert len(zero) == 4 and all(law.max_residual < 1e-10 for law in zero)


def test_pre_ln_layer_norm_rescaling_laws():
    result = run("transformer-prenorm", numeric=False)
    norms = [law for law in result.laws if law.module.endswith(("norm1", "norm2"))]
    assert len(norms) == 8 and all(law.status == "exact" for law in norms)


def test_mha_with_attention_mask_and_not_batch_first():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2)  # sequence first
            self.head = nn.Linear(4, 3)
            self.register_buffer("mask", torch.triu(torch.ones(5, 5, dtype=torch.bool), 1))

        def forward(self, x):  # x: (batch, tokens, dim), batch first as conslaw samples it
            x = x.transpose(0, 1)
            out, _ = self.attn(x, x, x, attn_mask=self.mask)
            return self.head(out.mean(dim=0))

    torch.manual_seed(1)
    result = find_laws(Masked(), torch.randn(2, 5, 4), "cross_entropy", numeric=False)
    attention = [law for law in result.laws if law.family == "attention"]
    assert len(attention) == 12 and all(law.status == "exact" for law in attention)


def test_the_users_model_is_left_untouched():
    b = BUILTINS["resnet-block"]
    model = b.build().float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_laws(model, b.example().float(), b.loss)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics included
    assert next(model.parameters()).dtype == torch.float32


def test_eval_mode_batchnorm_is_reported():
    b = BUILTINS["resnet-block"]
    model = b.build().eval()
    result = find_laws(model, b.example(), b.loss, numeric=False)
    assert any("eval mode" in w for w in result.warnings)
    assert not [law for law in result.laws if law.family == "scale-invariance"]


def test_bad_models_are_refused():
    with pytest.raises(ConslawError, match="no parameters"):
        find_laws(nn.ReLU(), torch.randn(2, 3))
    with pytest.raises(ConslawError, match="does not run"):
        find_laws(nn.Linear(3, 2), torch.randn(2, 5))
    with pytest.raises(ConslawError, match="batch dimension"):
        find_laws(nn.Linear(3, 2), torch.randn(3))
    with pytest.raises(ConslawError, match=r"nn\.Module subclass"):
        register_handler(int, Handler())


def test_a_registered_handler_makes_a_custom_module_a_leaf_with_laws():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor([1.5]))
            self.b = nn.Parameter(torch.tensor([0.7]))

        def forward(self, x):
            return self.a * self.b * x

    class ScaleHandler(Handler):
        def laws(self, name, module, space, findings):
            from conslaw.laws import balance_law, unit_slot
            findings.laws.append(balance_law("a^2 - b^2", [unit_slot(space, f"{name}.a", 0, 0)],
                                             [unit_slot(space, f"{name}.b", 0, 0)], family="custom", module=name))

    registry = HandlerRegistry.default().with_handler(Scale, ScaleHandler())
    model = nn.Sequential(nn.Linear(2, 2), Scale())
    result = find_laws(model, torch.randn(4, 2), handlers=registry)
    custom = [law for law in result.laws if law.family == "custom"]
    assert len(custom) == 1 and custom[0].status == "exact"
    # the per-call registry left the default one untouched: Scale is unknown there
    assert HandlerRegistry.default().handler_for(Scale()) is None
    with pytest.raises(ConslawError, match="already has a handler"):
        registry.register(Scale, ScaleHandler())


def test_unknown_parametric_module_is_reported():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return torch.sigmoid(self.g) * x

    result = find_laws(nn.Sequential(nn.Linear(2, 3), Gate(), nn.Linear(3, 1)), torch.randn(4, 2), numeric=False)
    assert any("1 (Gate) has no law handler" in w for w in result.warnings)
    assert "1.g" in result.uncovered_params


@pytest.mark.slow  # about 40 s on 2 cores: 11.7M parameters, float64 loss gradients at two points
def test_torchvision_resnet18_when_installed():
    # scripts/install_models.sh (run by CI) installs torchvision; conslaw.vision imports it beside the CPU torch
    pytest.importorskip("PIL")
    from conslaw.vision import import_torchvision

    try:
        torchvision = import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed (bash scripts/install_models.sh)")
    model = torchvision.models.resnet18(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_laws(model, torch.randn(2, 3, 32, 32), "cross_entropy", numeric=False)
    assert not [law for law in result.laws if law.status == "failed"]
    # ImageNet ResNet-18 (7x7 stem + max-pool): per-channel laws in each BasicBlock (64+64+128+128+256+256+512+512
    # = 1920), one residual-stream law per channel of each stage (64+128+256+512 = 960), 512 + 1 translations of fc
    families = {}
    for law in result.exact():
        families[law.family] = families.get(law.family, 0) + 1
    assert families["translation"] == 513 and families["rescaling (residual stream)"] == 960
    assert result.named_laws >= 1920 + 960 + 513
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_numeric_false_skips_the_lie_count():
    result = run("mlp", numeric=False)
    assert result.numeric_laws is None and result.named_laws == 13


@pytest.mark.slow  # about 30 s on 2 cores (D = 24 234)
def test_torchvision_small_vit_laws():
    pytest.importorskip("PIL")
    from conslaw.vision import import_torchvision

    try:
        import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed (bash scripts/install_models.sh)")
    from torchvision.models.vision_transformer import VisionTransformer

    from conslaw.models import seeded

    model = seeded(lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                             mlp_dim=64, num_classes=10), 0)
    result = find_laws(model, torch.randn(2, 3, 32, 32), "cross_entropy", numeric=False)
    counts = {}
    for law in result.laws:
        counts[(law.family, law.status)] = counts.get((law.family, law.status), 0) + 1
    assert ("attention", "failed") not in counts and not [c for c in result.laws if c.status == "failed"]
    assert counts[("attention", "exact")] == 2 * 2 * 2 * (16 * 17 // 2)  # 2 layers, 2 heads of 16, QK and VO
    # ln_1 -> q, k, v and ln_2 -> mlp.0, per layer; the final ln -> x[:, 0] -> heads.head
    assert counts[("rescaling", "exact")] == 4 * 32 + 32
    # the residual stream is read only by LayerNorms: pos_embedding rows (17 tokens), out_proj and mlp.3 writers,
    # the patch embedding conv (one sum over its 32 filters per input coordinate: 3 x 8 x 8, and its bias) and
    # the class token (joined by torch.cat)
    assert counts[("translation (into LayerNorm)", "exact")] == 17 + 2 * (32 + 1) + 2 * (64 + 1) + 193 + 1
    assert counts[("translation", "exact")] == 33  # the head before softmax + cross-entropy
    assert counts[("scale-invariance", "approximate")] == 1  # every writer of the stream scaled: eps breaks it
    # x = cat(class token, patches) + P: cls[0,0,d] - P[0,0,d] and conv_proj.bias[d] - sum_t>=1 P[0,t,d]
    assert counts[("translation (summed embeddings)", "exact")] == 32 + 32
    assert (result.named_laws, result.approximate_laws) == (1752 + 64 - 2, 1)  # 2 depend on the row sums
