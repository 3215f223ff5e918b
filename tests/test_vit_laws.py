"""torchvision's small ViT (2 layers, hidden 32, 2 heads, MLP 64, 32^2 images, patch 8, D = 24 234).

The whole-model Lie count at MLP 64 takes too long on 2 cores (level 1 alone: 555 s CPU), so the
engine counts per block (Prop 4.3: restricted fields, the other parameters resampled;
conslaw.nn.block_check) and the named laws living on the block are compared with it. With MLP 8
(D = 16 954) the whole model is counted (slow test below). torchvision zero-initialises the head
and the class token: the named count must not depend on that; the engine's count does: at that
point (moved 1 % for the count) the Lie rank has no spectral gap (1.01 at MLP 8, 1.18 on the tiny
ViT below), so the whole-model counts are taken with the head and class token drawn from N(0, 0.1).
"""

import pytest
import torch

from conslaw import find_laws

pytestmark = pytest.mark.slow  # find_laws on D = 24 234: 10-30 s each, the block count ~1 min, on 2 cores


def small_vit(reinit_head: bool = False, mlp_dim: int = 64, image_size: int = 32, patch_size: int = 8,
              hidden_dim: int = 32, num_classes: int = 10, reinit_class_token: bool = False):
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
    # the small ViT of issue 14 (32^2 images, patch 8, hidden 32) with MLP 8: the engine's count takes ~300
    # CPU-seconds on one core (525 s wall at load 5), 11.5 GB; spectral gap 10 at the default eps (not analysed
    # further); marked heavy: not in CI (pytest -m heavy)
    pytest.param(32, 8, 32, 8, 10, 16954, 1702, 5.0, id="issue-14-vit-mlp8", marks=pytest.mark.heavy),
])
def test_whole_vit_named_equals_the_engine(image, patch, hidden, mlp, classes, D, named, gap):
    """Whole model: named exact == D - dim Lie; the one approximate law (the input scale through the
    LayerNorms, broken by eps = 1e-6) is listed apart and the engine sees it broken."""
    model = small_vit(True, mlp, image, patch, hidden, classes, reinit_class_token=True)
    x = torch.randn(4, 3, image, image, generator=torch.Generator().manual_seed(0))
    result = find_laws(model, x, "cross_entropy", numeric=True)
    assert (result.D, result.named_laws, result.approximate_laws, result.lie_laws) == (D, named, 1, named)
    assert result.numeric_gap > gap and result.unnamed_laws == 0


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
