"""Hugging Face Trainer: LawMonitorCallback records after every optimizer step, as a plain loop does;
its scalars reach TensorBoard (read back with EventAccumulator)."""

import numpy as np
import pytest
import torch

from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from conslaw.integrations.hf import LawMonitorCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

STEPS, BATCH, LR, WD, LENGTH = 20, 4, 0.05, 1e-3, 6


def bert():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = transformers.BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8,
                                         intermediate_size=16, vocab_size=16, max_position_embeddings=8,
                                         num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return transformers.BertForSequenceClassification(config).double()


class Examples(torch.utils.data.IterableDataset):
    """STEPS * BATCH fixed examples in a fixed order (no sampler: the Trainer's order is this one)."""

    def __init__(self):
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 16, (STEPS * BATCH, LENGTH), generator=gen)
        self.labels = torch.randint(0, 3, (STEPS * BATCH,), generator=gen)

    def __iter__(self):
        for ids, label in zip(self.ids, self.labels, strict=True):
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": label}


def plain_loop(laws):
    model = bert()
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WD)
    monitor.attach(opt)
    data = Examples()
    for k in range(STEPS):
        sl = slice(k * BATCH, (k + 1) * BATCH)
        batch = {"input_ids": data.ids[sl], "attention_mask": torch.ones_like(data.ids[sl]),
                 "labels": data.labels[sl]}
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    return monitor


@pytest.mark.slow
def test_hf_trainer_records_every_step_like_a_plain_loop_and_logs_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = bert()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=BATCH, max_steps=STEPS, use_cpu=True,
        lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=5, report_to=["tensorboard"],
        save_strategy="no", disable_tqdm=True, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WD)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Examples(), optimizers=(opt, None))
    callback = LawMonitorCallback(laws="auto", find_kwargs={"batches": 2}).add_to(trainer)
    trainer.train()
    first = next(iter(Examples()))
    example = {"input_ids": Examples().ids[:BATCH], "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long)}
    assert first["input_ids"].shape == (LENGTH,)
    laws = [c.law for c in find_laws(bert(), example, "cross_entropy", numeric=False, batches=2).exact()]
    assert [law.name for law in callback.monitor.laws] == [law.name for law in laws]
    plain = plain_loop(laws)
    assert callback.monitor.steps == STEPS and len(callback.monitor.values) == STEPS + 1
    np.testing.assert_allclose(callback.relative_errors(), plain.relative_errors(), rtol=0, atol=1e-10)
    # BERT's linear laws (softmax translation, zero-gradient key biases) stay at round-off under SGD once
    # Thm 2.1's correction undoes the decay; its quadratic attention laws move by O(lr^2) only
    linear = np.array([law.quad is None or law.quad[2].numel() == 0 for law in laws])
    final = plain.relative_errors()[-1][:len(laws)]
    assert linear.sum() >= 8 and (~linear).sum() >= 8
    assert final[linear].max() < 1e-13 and 1e-12 < final[~linear].max() < 1e-6
    uncorrected = callback.relative_errors(corrected=False)
    np.testing.assert_allclose(uncorrected, plain.relative_errors(corrected=False), rtol=0, atol=1e-10)
    assert uncorrected[-1].max() > 1e-4
    assert plain.Lambda["classifier.weight"] > 0  # weight decay read from the optimizer (Thm 2.1)
    # TensorBoard got the scalars at the Trainer's logging steps
    events = [p for p in tmp_path.rglob("events.out.tfevents.*")]
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    worst = {e.step: e.value for e in acc.Scalars("train/conslaw/worst")}  # the Trainer prefixes train/
    assert sorted(worst) == [5, 10, 15, 20]
    for step, value in worst.items():
        assert value == pytest.approx(plain.relative_errors()[step].max(), rel=1e-6)


@pytest.mark.slow
def test_hf_trainer_gradient_accumulation_records_each_real_update(tmp_path):
    model = bert()
    laws = [c.law for c in find_laws(bert(), {"input_ids": Examples().ids[:BATCH]}, "cross_entropy",
                                     numeric=False, batches=2).exact()]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=BATCH // 2, gradient_accumulation_steps=2,
        max_steps=STEPS, use_cpu=True, lr_scheduler_type="constant", max_grad_norm=0.0, report_to=[],
        save_strategy="no", disable_tqdm=True, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WD)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Examples(), optimizers=(opt, None))
    callback = LawMonitorCallback(laws=laws, every_n_steps=4).add_to(trainer)
    trainer.train()
    # 20 updates of 2 micro-batches of 2 = the plain loop's 20 steps of 4 (mean losses: the same gradients)
    assert callback.monitor.steps == STEPS and list(callback.monitor.recorded_steps) == [0, 4, 8, 12, 16, 20]
    plain = plain_loop(laws)
    # linear laws (decay only, Thm 2.1) agree to round-off; the quadratic attention laws also see the O(lr^2)
    # part of the trajectory, which two micro-batches move by ~1e-4 of the decay's effect: compared relatively
    linear = [law.quad is None or law.quad[2].numel() == 0 for law in laws]
    mine, theirs = callback.relative_errors(corrected=False), plain.relative_errors(corrected=False)[::4]
    lin = np.flatnonzero(linear)
    quad = np.flatnonzero(~np.array(linear))
    np.testing.assert_allclose(mine[:, lin], theirs[:, lin], rtol=0, atol=1e-10)
    np.testing.assert_allclose(mine[:, quad], theirs[:, quad], rtol=2e-3, atol=1e-12)
