"""find_laws on torchvision's own constructors at their real size (issue 12's list): resnet50, mobilenet_v2,
convnext_tiny, and vit_b_16 at 32 x 32 images. Random init, no download, eval mode, cross-entropy.

Each must run, name laws only in the model's own parameter names, leave the model bit-equal and fail no
law; the counts are derived by hand where a line does it and otherwise the measured ones of
benchmarks/RESULTS.md (2026-11-29), so that a change in any family shows.
"""

import pytest
import torch

from conslaw import find_laws
from test_model_zoo import counts, images, torchvision


def _run(build):
    tv = torchvision()
    torch.manual_seed(0)
    model = build(tv.models).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = find_laws(model, images(2), "cross_entropy", numeric=False)
    names = dict(model.named_parameters())
    assert all(p in names for c in found.laws for p in c.law.params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
    assert not [c for c in found.laws if c.status == "failed"]
    return found


@pytest.mark.slow  # ~22 s, 2.4 GB
def test_resnet50():
    found = _run(lambda m: m.resnet50(num_classes=10))
    stages = [(64, 3), (128, 4), (256, 6), (512, 3)]  # (bottleneck width, blocks)
    assert counts(found) == {
        # eval-mode BatchNorm is affine: each ReLU channel inside a bottleneck (2 per block) and the stem's 64
        ("rescaling", "exact"): 2 * sum(w * b for w, b in stages) + 64,
        # the residual stream of a stage (4 x its width channels, after each block's ReLU): one law per channel
        ("rescaling (residual stream)", "exact"): sum(4 * w for w, _ in stages),
        ("translation", "exact"): 2048 + 1,  # Prop 3.11 on fc: its 2 048 inputs and the bias
    }
    assert found.named_laws == 13_505 == len(found.laws)


def test_mobilenet_v2():  # ~3 s
    found = _run(lambda m: m.mobilenet_v2(num_classes=10))
    assert counts(found)[("translation", "exact")] == 1280 + 1  # Prop 3.11 on the classifier's Linear
    assert found.named_laws == 1_993 == len(found.laws)


@pytest.mark.slow  # ~22 s, 2.7 GB
def test_convnext_tiny():
    found = _run(lambda m: m.convnext_tiny(num_classes=10))
    c = counts(found)
    assert c[("translation", "exact")] == 768 + 1
    # layer scale: one law per channel of each block's gamma (3 + 3 + 9 + 3 blocks of 96, 192, 384, 768)
    assert c[("rescaling (layer scale)", "exact")] == 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768
    assert found.named_laws == 15_524 and found.approximate_laws == 19


@pytest.mark.slow
@pytest.mark.heavy  # ~3-5 min, ~9.7 GB: pytest -m heavy (not in CI)
def test_vit_b_16_at_32_pixels():
    found = _run(lambda m: m.vit_b_16(image_size=32, num_classes=10))
    # 12 layers x 12 heads x 2 matrix laws x 64 * 65 / 2 entries
    assert counts(found)[("attention", "exact")] == 12 * 12 * 2 * 64 * 65 // 2
    assert found.named_laws == 676_638
