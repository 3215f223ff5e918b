"""Sparse mixture-of-experts (transformers' Mixtral, random init, no download): laws per expert and of the router.

The routing (top-k experts per token) is data-dependent: torch.export runs the MoE block as one opaque op and
vmap falls back to a loop (conslaw.batching). Counts derived in each test; the independent check is plain
float64 SGD at lr and 2 lr.
"""

import pytest
import torch

import conslaw
from _sgd_drift import drift_at_lr_and_2lr, law_values
from conslaw.nn.moe_layout import is_sparse_moe

transformers = pytest.importorskip("transformers")

E, K, H, INNER = 3, 2, 8, 4  # experts, experts per token, hidden size, expert width


def _mixtral():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.MixtralForCausalLM(transformers.MixtralConfig(
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, hidden_size=H,
            intermediate_size=INNER, vocab_size=16, max_position_embeddings=8, num_local_experts=E,
            num_experts_per_tok=K, head_dim=4, experts_implementation="eager", initializer_range=0.5)).eval()


def _batch(seed=0):
    ids = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones(2, 5, dtype=torch.long)}


def _counts(found):
    out: dict = {}
    for c in found.laws:
        out[(c.family, c.status)] = out.get((c.family, c.status), 0) + 1
    return out


def test_mixtral_expert_and_router_laws_are_named_and_exact():
    model = _mixtral()
    assert is_sparse_moe(model.model.layers[0].mlp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = conslaw.find_laws(model, _batch(), "next_token", numeric=False)
    c = _counts(found)
    assert c[("rescaling (expert)", "exact")] == E * INNER  # |up_e[k,:]|^2 - |down_e[:,k]|^2
    assert c[("translation (router)", "exact")] == H  # softmax over experts: the router's column sums
    # RMSNorm gains: input norm -> q, k, v; post-attention norm -> router + experts (the MoE reads them linearly);
    # final norm -> lm_head: one law per feature each
    assert c[("rescaling", "exact")] == 3 * H
    assert not [x for x in found.laws if x.status == "failed"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert found.named_laws == 64


@pytest.mark.slow  # ~50 s: the engine's brackets one at a time (vmap cannot batch the routing)
def test_mixtral_named_equals_the_engine():
    found = conslaw.find_laws(_mixtral(), _batch(), "next_token", numeric=True)
    assert found.named_laws == found.lie_laws == 64 and found.numeric_gap > 1e3


def test_sgd_drift_of_expert_laws_is_quadratic_in_the_step():
    model = _mixtral()
    found = conslaw.find_laws(model, _batch(), "next_token", numeric=False)
    expert = [c.law for c in found.laws if c.family == "rescaling (expert)"][:3]
    router = [c.law for c in found.laws if c.family == "translation (router)"][:1]

    def loss(m, batch):
        logits = m(**batch).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch["input_ids"][:, 1:].reshape(-1))

    def observe(m):
        values = law_values(expert + router)(m)
        w = m.model.layers[0].mlp.experts.down_proj
        return torch.cat([values, w.detach().square().sum().reshape(1)])

    small, large = drift_at_lr_and_2lr(_mixtral, loss, [_batch(s) for s in range(20)], observe, 1e-3)
    ratios = (large / small).abs()
    assert ((ratios[:3] > 3.5) & (ratios[:3] < 4.5)).all(), ratios  # exact quadratic laws: ~4 (lr^2)
    assert 1.7 < ratios[-1] < 2.3, ratios  # |down_proj|^2 is not conserved: ~2 (lr)
    # a linear law: every step keeps it, up to the float32 softmax the model applies to its router logits
    # (measured: 5e-12 and 8e-12, against 1e-8 .. 1e-6 for the quadratic laws)
    assert small[3].abs() < 1e-2 * small[:3].abs().min() and large[3].abs() < 1e-2 * large[:3].abs().min()
