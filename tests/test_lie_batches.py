"""Brackets per vmap call (conslaw.lie.level_batch): fewer at deep levels of large models, same brackets."""

import torch

import conslaw.lie as lie
from conslaw import catalog


def test_level_batch_halves_per_level_above_two_only_for_large_models():
    assert [lie.level_batch(256, k, 100) for k in (1, 2, 3, 4, 5)] == [256, 256, 256, 256, 256]
    assert [lie.level_batch(256, k, 20_000) for k in (1, 2, 3, 4, 5, 6, 9)] == [256, 256, 128, 64, 32, 16, 16]
    assert [lie.level_batch(8, k, 20_000) for k in (1, 3, 5)] == [8, 8, 8]  # never more than asked


def test_smaller_batches_draw_the_same_brackets():
    arch = catalog.relu(3, 4, 3, bias=True)
    source, theta = arch.fields(), arch.space.sample(generator=torch.Generator().manual_seed(0))
    whole = lie.sample_brackets(source, theta, 3, 40, torch.Generator().manual_seed(3), batch=256)
    split = lie.sample_brackets(source, theta, 3, 40, torch.Generator().manual_seed(3), batch=16)  # 16 + 16 + 8
    assert whole.shape == split.shape == (40, arch.space.D)
    assert float(whole.abs().max()) > 0.1
    torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-14)


def test_the_engine_splits_deep_levels_of_large_models(monkeypatch):
    calls = []
    original = lie.sample_brackets

    def recording(source, theta, level, n, generator, batch=256, exemplars=None):
        calls.append((level, batch))
        return original(source, theta, level, n, generator, batch, exemplars)

    monkeypatch.setattr(lie, "sample_brackets", recording)
    monkeypatch.setattr(lie, "LARGE_D", 1)
    arch = catalog.linear(3, 4, 3)
    lie.lie_trace_dimension(arch.fields(), arch.space.sample(generator=torch.Generator().manual_seed(0)), seed=3)
    assert {level: batch for level, batch in calls} == {1: 256, 2: 256, 3: 128}
