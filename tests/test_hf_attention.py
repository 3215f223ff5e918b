"""Attention laws of tiny random Hugging Face GPT-2 / Llama and timm ViT models, in their own parameter names.

Independent check (outside conslaw's code path): the per-head matrices Q Q^T - K K^T and V V^T - O^T O
are computed here from the weights themselves, and plain float64 SGD for 20 steps at lr and 2 lr moves
them by a factor ~4 (they drift only at O(lr^2)) while |W|^2 moves by ~2 (O(lr)).
"""

import time

import pytest
import torch
import torch.nn.functional as F

from _sgd_drift import drift_ratios
from conslaw.fields import restrict
from conslaw.lie import lie_trace_dimension
from conslaw.models import seeded
from conslaw.nn import analyse, find_laws
from conslaw.rank import sparse_rank

transformers = pytest.importorskip("transformers")

QK, VO = "Q Q^T - K K^T", "V V^T - O^T O"


def gpt2(init=0.02):
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8,
                                     initializer_range=init)
    return seeded(lambda: transformers.GPT2LMHeadModel(config), 0).eval()


def llama(heads=2, kv_heads=2, hidden=8):
    config = transformers.LlamaConfig(num_hidden_layers=1, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                      hidden_size=hidden, intermediate_size=16, vocab_size=16,
                                      max_position_embeddings=8)
    return seeded(lambda: transformers.LlamaForCausalLM(config), 0).eval()


def vit(init=None):
    """A tiny timm ViT; ``init``: redraw every weight matrix from N(0, init^2) (larger gradients for the drift test)."""
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    assert timm

    def build():
        model = VisionTransformer(img_size=8, patch_size=4, num_classes=3, embed_dim=8, depth=1, num_heads=2,
                                  mlp_ratio=2.0)
        if init is not None:
            with torch.no_grad():
                for p in model.parameters():
                    p.normal_(0.0, init)
        return model

    return seeded(build, 0).eval()


def tokens(n=2, length=5):
    ids = torch.randint(0, 16, (n, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones(n, length, dtype=torch.long)}


def augmented(weight, bias, rows):
    """Rows of a Linear map with the bias appended as an extra column (eq. 18 with biases)."""
    return torch.cat([weight[rows], bias[rows, None]], dim=1)


def head_matrices(q, k, v, o_cols, h, dh):
    """Head h: Q Q^T - K K^T and V V^T - O^T O from augmented (rows, in + 1) q, k, v and O's columns (out, E)."""
    rows = slice(h * dh, (h + 1) * dh)
    o = o_cols[:, rows]
    return q[rows] @ q[rows].T - k[rows] @ k[rows].T, v[rows] @ v[rows].T - o.T @ o


def gpt2_matrices(model, h):
    attn = model.transformer.h[0].attn
    w, b, e = attn.c_attn.weight.T, attn.c_attn.bias, attn.embed_dim  # Conv1D: weight (in, out)
    q, k, v = (augmented(w, b, slice(i * e, (i + 1) * e)) for i in range(3))
    return head_matrices(q, k, v, attn.c_proj.weight.T, h, e // attn.num_heads)


def vit_matrices(model, h):
    attn = model.blocks[0].attn
    w, b, e = attn.qkv.weight, attn.qkv.bias, attn.qkv.in_features
    q, k, v = (augmented(w, b, slice(i * e, (i + 1) * e)) for i in range(3))
    return head_matrices(q, k, v, attn.proj.weight, h, e // attn.num_heads)


def check_drift(build, loss_fn, batches, matrices, weight):
    """Three entries of the head laws drift ~4x at 2 lr, the weight's squared norm ~2x."""
    def observe(model):
        qk0, vo0 = matrices(model, 0)
        qk1, _ = matrices(model, 1)
        return torch.stack([qk0[0, 0], qk1[1, 2], vo0[0, 3], weight(model).square().sum()])

    ratios = drift_ratios(build, loss_fn, batches, observe, 1e-4)
    assert ratios[:3] == pytest.approx(torch.full((3,), 4.0), rel=0.15), ratios
    assert float(ratios[3]) == pytest.approx(2.0, rel=0.15)


def test_gpt2_conv1d_fused_c_attn_laws_in_its_own_names():
    model = gpt2()
    result = find_laws(model, tokens(), "cross_entropy", numeric=False, batches=2)
    attn = result.select(family="attention", status=None)
    assert len(attn) == 2 * 2 * 10 and all(c.status == "exact" for c in attn)  # 2 heads of dh = 4, QK and VO
    names = set(dict(model.named_parameters()))
    assert {p for c in attn for p in c.law.params} == {"transformer.h.0.attn.c_attn.weight",
                                                       "transformer.h.0.attn.c_attn.bias",
                                                       "transformer.h.0.attn.c_proj.weight"} <= names
    assert len(result.select(family="zero-gradient", module="transformer.h.0.attn.c_attn")) == 8  # key bias
    assert {c.law.head for c in attn} == {0, 1}  # heads read from the split shapes: config n_head = 2
    assert not result.warnings  # among them: a head count that differs from config.num_attention_heads
    # the named laws are the per-head matrices computed here from the weights (Conv1D weight is (in, out))
    analysis = analyse(model, tokens(), "cross_entropy", traced=False)
    with torch.no_grad():
        for h in (0, 1):
            qk, vo = gpt2_matrices(analysis.model, h)
            for matrix, want in ((QK, qk), (VO, vo)):
                laws = [c.law for c in attn if c.law.head == h and c.law.matrix == matrix]
                for law in laws:
                    a, b = (u % 4 for u in law.unit)
                    assert float(law.value(analysis.theta)) == pytest.approx(float(want[a, b]), abs=1e-12)
    # tied weights: lm_head.weight is transformer.wte.weight, never named on its own
    assert not any("lm_head" in p for c in result.laws for p in c.law.params)


def test_gpt2_attention_laws_drift_at_second_order_under_sgd():
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 16, (4, 6), generator=gen) for _ in range(20)]
    check_drift(lambda: gpt2(0.5), lambda m, ids: m(input_ids=ids, labels=ids).loss, batches, gpt2_matrices,
                lambda m: m.transformer.h[0].attn.c_attn.weight)


def test_timm_vit_fused_qkv_laws_fx_and_export_agree():
    model = vit()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    results = [find_laws(model, x, "cross_entropy", numeric=False, batches=2, front_end=fe) for fe in ("fx", "export")]
    for result in results:
        attn = result.select(family="attention", status=None)
        assert len(attn) == 40 and all(c.status == "exact" for c in attn)
        assert {p for c in attn for p in c.law.params} == {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
                                                           "blocks.0.attn.proj.weight"}
        assert len(result.select(family="zero-gradient", module="blocks.0.attn.qkv")) == 8
        # the norm1 -> qkv rescaling (issue 12: it was lost with the fused qkv)
        assert len(result.select(family="rescaling", module="blocks.0.norm1")) == 8
    assert sorted(c.law.formula for c in results[0].laws if "attention" in c.family) == \
        sorted(c.law.formula for c in results[1].laws if "attention" in c.family)


def test_timm_vit_attention_laws_drift_at_second_order_under_sgd():
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(20)]
    check_drift(lambda: vit(0.5), lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches, vit_matrices,
                lambda m: m.blocks[0].attn.qkv.weight)


def block_counts(model, example, block):
    """(named exact laws inside the block, numeric Lie count of the fields restricted to the block, seconds)."""
    result = find_laws(model, example, "cross_entropy", numeric=False, batches=2)
    analysis = analyse(model, example, "cross_entropy", traced=False)
    source = restrict(analysis.fields, block)
    start = time.perf_counter()
    lie = lie_trace_dimension(source, analysis.theta[source.block_index], seed=0)
    inside = [c for c in result.laws if c.status == "exact" and set(c.law.params) <= set(block)]
    named = sparse_rank([c.law.sparse_grad(analysis.theta) for c in inside], analysis.space.D)
    return named, lie.lie_laws, time.perf_counter() - start


def decoder(kind, heads=2, kv_heads=2, hidden=8, attn="sdpa"):
    """A tiny random Llama / Qwen2 (q, k, v biases) / Mistral causal LM with rotary embeddings."""
    config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                             "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
                             "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}[kind]
    config = config_cls(num_hidden_layers=1, num_attention_heads=heads, num_key_value_heads=kv_heads,
                        hidden_size=hidden, intermediate_size=16, vocab_size=16, max_position_embeddings=8,
                        head_dim=hidden // heads, attn_implementation=attn)
    return seeded(lambda: model_cls(config), 0).eval()


@pytest.mark.parametrize("kind,heads,kv_heads,hidden,attn", [
    ("llama", 2, 2, 8, "sdpa"), ("llama", 2, 1, 8, "eager"), ("qwen2", 2, 1, 8, "sdpa"),
    pytest.param("mistral", 2, 1, 8, "eager", marks=pytest.mark.slow),
    pytest.param("llama", 4, 2, 16, "sdpa", marks=pytest.mark.slow)])
def test_rotary_and_grouped_query_laws_equal_the_engine_on_the_attention_block(kind, heads, kv_heads, hidden, attn):
    """RoPE keeps dh/2 pair traces of sum_h Q_h Q_h^T - K K^T per key head; V V^T - sum_h O_h^T O_h stays whole.

    Qwen2's q, k, v biases are appended to the rows (the rotation acts on q + b_q); its key bias gets no
    zero-gradient law (the rotation makes the shift depend on the key's position).
    """
    model = decoder(kind, heads, kv_heads, hidden, attn)
    dh = hidden // heads
    block = [name for name, _ in model.named_parameters() if ".self_attn." in name]
    named, numeric, _ = block_counts(model, tokens(), block)
    expected = kv_heads * (dh // 2 + dh * (dh + 1) // 2)
    assert (named, numeric) == (expected, expected)


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_eager_attention_paths_name_the_same_laws(name):
    """Softmax in float32 with casts (HF eager), a timm mask helper on the scores: same 40 + 8 laws as SDPA."""
    if name == "gpt2":
        config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8,
                                         attn_implementation="eager")
        model, example = seeded(lambda: transformers.GPT2LMHeadModel(config), 0).eval(), tokens()
    else:
        model, example = vit(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        model.blocks[0].attn.fused_attn = False  # q @ k^T, softmax, @ v written out
    result = find_laws(model, example, "cross_entropy", numeric=False, batches=2)
    assert len(result.select(family="attention")) == 40
    assert len(result.select(family="zero-gradient")) == 8
    assert not result.select(status="failed")


def test_t5_self_and_cross_attention_laws():
    """T5 (no biases, relative position bias added to the scores, cache object in the outputs): per head laws
    in the encoder's self-attention, the decoder's self-attention and its cross-attention (q from the decoder,
    k and v from the encoder: the same symmetry Q_h -> A Q_h, K_h -> A^{-T} K_h)."""
    config = transformers.T5Config(vocab_size=16, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_decoder_layers=1,
                                   num_heads=2, relative_attention_num_buckets=4, decoder_start_token_id=0)
    model = seeded(lambda: transformers.T5ForConditionalGeneration(config), 0).eval()
    batch = tokens()
    result = find_laws(model, {**batch, "decoder_input_ids": batch["input_ids"]}, "cross_entropy", numeric=False,
                       batches=2)
    attn = result.select(family="attention", status=None)
    assert len(attn) == 3 * 2 * 2 * 10 and all(c.status == "exact" for c in attn)
    assert {c.law.module for c in attn} == {f"{stack}.{layer}.{p}" for stack, layer in (
        ("encoder.block.0.layer.0", "SelfAttention"), ("decoder.block.0.layer.0", "SelfAttention"),
        ("decoder.block.0.layer.1", "EncDecAttention")) for p in "qv"}


def test_gpt2_attention_block_named_equals_the_engine():
    """c_attn, c_proj: 2 heads x (10 + 10) + 8 key-bias zero gradients + 9 c_proj translations (LayerNorm readers)."""
    block = [f"transformer.h.0.attn.{p}" for p in ("c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias")]
    named, numeric, _ = block_counts(gpt2(), tokens(), block)
    assert (named, numeric) == (40 + 8 + 9, 57)


@pytest.mark.slow  # ~10 s
def test_timm_vit_attention_block_named_equals_the_engine():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    block = [f"blocks.0.attn.{p}" for p in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias")]
    named, numeric, _ = block_counts(vit(), x, block)
    assert (named, numeric) == (40 + 8 + 9, 57)
