"""Brackets per vmap call (conslaw.lie.level_batch): fewer at deep levels of large models, same brackets."""

import torch

import conslaw.lie as lie
from conslaw import catalog


def test_level_batch_halves_per_level_above_two_only_for_large_models():
    assert [lie.level_batch(256, k, 100) for k in (1, 2, 3, 4, 5)] == [256, 256, 256, 256, 256]
    assert [lie.level_batch(256, k, 20_000) for k in (1, 2, 3, 4, 5, 6, 9)] == [256, 256, 128, 64, 32, 16, 16]


def test_smaller_batches_draw_the_same_brackets(monkeypatch):
    arch = catalog.linear(3, 4, 3)
    theta = arch.space.sample(generator=torch.Generator().manual_seed(0))
    whole = lie.lie_trace_dimension(arch.fields(), theta, seed=3)
    monkeypatch.setattr(lie, "LARGE_D", 1)  # every level above 2 split into vmaps of 16 brackets
    split = lie.lie_trace_dimension(arch.fields(), theta, seed=3)
    assert len(whole.levels) >= 3 and whole.levels[2].samples > 16  # level 3 was drawn in more than one vmap
    assert [(lv.samples, lv.added) for lv in split.levels] == [(lv.samples, lv.added) for lv in whole.levels]
    assert torch.allclose(split.basis, whole.basis, atol=1e-12)
