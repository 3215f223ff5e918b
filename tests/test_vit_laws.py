"""torchvision's small ViT (2 layers, hidden 32, 2 heads, 32^2 images, patch 8; MLP 64: D = 24 234, MLP 8: 16 954).

Per block (Prop 4.3: restricted fields, the other parameters resampled; conslaw.nn.block_check) at MLP 64,
and the whole model at MLP 8 (slow test below: ~150 s and 6.7 GB on 2 cores). torchvision zero-initialises
the head, the class token and every attention and LayerNorm bias: the named count must not depend on that;
the engine's count does: at that point (moved 1 % for the count) the Lie rank has no spectral gap (1.01 at
MLP 8, 1.18 on the tiny ViT below), so the whole-model counts are taken with the all-zero tensors drawn from
N(0, 0.1) (head, class token) and N(0, 0.02) (biases).
"""

import pytest
import torch

from conslaw import find_laws

pytestmark = pytest.mark.slow  # find_laws on D = 24 234: 10-30 s each, the block count ~1 min, on 2 cores


def small_vit(reinit_head: bool = False, mlp_dim: int = 64, image_size: int = 32, patch_size: int = 8,
              hidden_dim: int = 32, num_classes: int = 10, reinit_class_token: bool = False,
              redraw_zero_biases: bool = False):
    pytest.importorskip("PIL")
    from conslaw.vision import import_torchvision

    try:
        import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed (bash scripts/install_models.sh)")
    from torchvision.models.vision_transformer import VisionTransformer

    from conslaw.models import seeded

    def build():
        model = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=2, num_heads=2,
                                  hidden_dim=hidden_dim, mlp_dim=mlp_dim, num_classes=num_classes)
        if reinit_head:
            torch.nn.init.normal_(model.heads.head.weight, std=0.1)
            torch.nn.init.normal_(model.heads.head.bias, std=0.1)
        if reinit_class_token:
            torch.nn.init.normal_(model.class_token, std=0.1)
        if redraw_zero_biases:
            for name, p in model.named_parameters():
                if name.endswith("bias") and not p.any():
                    torch.nn.init.normal_(p, std=0.02)
        return model
    return seeded(build, 0)


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_a_zero_initialised_head_does_not_change_the_named_count():
    zero = small_vit()
    assert not zero.heads.head.weight.any()  # torchvision's init
    a = find_laws(zero, X, "cross_entropy", numeric=False)
    b = find_laws(small_vit(reinit_head=True), X, "cross_entropy", numeric=False)
    assert (a.named_laws, a.approximate_laws) == (b.named_laws, b.approximate_laws) == (1814, 1)
    assert not [c for c in a.laws + b.laws if c.status == "failed"]


@pytest.mark.parametrize("block,size,named", [
    # 19 shifts the LayerNorms remove (class token row sum, patch-conv bias sum, 17 position rows) and 64
    # summed-embedding laws (cls - P[0] and conv bias - sum_t>=1 P[t], per feature), 2 of them dependent: 81.
    # (The block of the final ln and the head, 394 parameters: 65 named == 65 counted, but 9 min on 2 cores.)
    (["class_token", "conv_proj.bias", "encoder.pos_embedding"], 32 + 32 + 544, 81),
])
def test_vit_blocks_named_equals_the_engine(block, size, named):
    from conslaw.nn.block_check import block_count

    model = small_vit()
    laws = find_laws(model, X, "cross_entropy", numeric=False)
    count = block_count(model, X, "cross_entropy", laws, block)
    assert (count.size, count.named_exact, count.numeric) == (size, named, named)
    assert count.gap > 1e3


@pytest.mark.parametrize("image,patch,hidden,mlp,classes,D,named,gap", [
    # a tiny ViT: 8^2 images, patch 4, hidden 8, MLP 8, 3 classes (~15 s; gap 6.6e3)
    (8, 4, 8, 8, 3, 1411, 250, 1e3),
    # the small ViT of issue 14 (32^2 images, patch 8, hidden 32) with MLP 8: ~150 s and 6.7 GB on 2 cores.
    # Spectral gap 24.8 (measured; 10.7 with the zero biases): the smallest kept singular value is a level-3
    # direction at 7.2e-8, the largest dropped one 2.9e-9. That floor is not round-off of the brackets but of
    # the basis: 69 level-2 directions are kept at singular values ~1e-6, each known to eps / 1e-6 ~ 1e-10 in
    # angle, and every later bracket projected on them leaves ~1e-9. The eps-broken law is not the weak one:
    # its direction is kept at level 1 (singular value 1.4e-5; at eps = 0 it is absent, and 1 703 named ==
    # 1 703 counted, gap 16).
    pytest.param(32, 8, 32, 8, 10, 16954, 1702, 10.0, id="issue-14-vit-mlp8"),
])
def test_whole_vit_named_equals_the_engine(image, patch, hidden, mlp, classes, D, named, gap):
    """Whole model: named exact == D - dim Lie; the one approximate law (the input scale through the
    LayerNorms, broken by eps = 1e-6) is listed apart and the engine sees it broken."""
    model = small_vit(True, mlp, image, patch, hidden, classes, reinit_class_token=True,
                      redraw_zero_biases=D > 10_000)
    x = torch.randn(4, 3, image, image, generator=torch.Generator().manual_seed(0))
    result = find_laws(model, x, "cross_entropy", numeric=True)
    assert (result.D, result.named_laws, result.approximate_laws, result.lie_laws) == (D, named, 1, named)
    assert result.numeric_gap > gap and result.unnamed_laws == 0
    assert result.derivative_check.ok


def test_a_count_at_the_zero_initialised_vit_warns_that_the_point_is_degenerate():
    """At torchvision's init (zero head and class token) the tiny ViT's count has no spectral gap (measured:
    254 counted vs 250 named, gap ~1.2; 250 == 250, gap 6.6e3 with them redrawn, test above): the warning
    names the zero tensors and says to redraw them."""
    model = small_vit(False, 8, 8, 4, 8, 3)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    result = find_laws(model, x, "cross_entropy", numeric=True)
    assert result.D == 1411 and result.named_laws == 250 and result.numeric_gap < 1e3
    warning = next(w for w in result.warnings if w.startswith("parameters entirely zero at theta"))
    assert "class_token" in warning and "heads.head.weight" in warning and "redraw them" in warning
