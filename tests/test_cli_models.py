"""``conslaw laws --model-kind hf:... --config FILE.json``, (model, batch dict) model files and ``--loss`` forms.

Checked from outside the CLI: the same model and batch built here with transformers directly give the same
laws through ``conslaw.find_laws``; the next-token loss against Hugging Face's own returned loss.
"""

import importlib.util
import json

import pytest
import torch

import conslaw
from _cli import _capture  # noqa: F401  (the autouse fixture and the in-process runner)
from _cli import conslaw as cli
from conslaw.fields import LossGradFields
from conslaw.fields.losses import BUILTIN_LOSSES

transformers = pytest.importorskip("transformers")

#: a tiny GPT-2; init std 0.5 (not 0.02) so that the Lie engine's rank has a clear gap
GPT2 = {"n_layer": 1, "n_head": 2, "n_embd": 8, "vocab_size": 16, "n_positions": 8, "initializer_range": 0.5,
        "bos_token_id": 0, "eos_token_id": 0}
#: named laws (independent, exact) of that GPT-2 at seq 8, batch 2, seed 0, next-token loss (measured)
GPT2_NAMED = 122  # measured; 8 of them the summed-embedding shift of the tied head (next_token is a softmax loss)
LAW_KEYS = {"name", "kind", "formula", "params", "count", "verified", "approximate", "max_residual"}
CONTRACT = {"model", "D", "laws", "uncovered_params", "named_laws", "numeric_laws"}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _gpt2_and_batch(seq=8, batch=2, seed=0):
    """The documented build of --model-kind hf:gpt2: seeded init, token ids over the whole vocabulary."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)).eval()
    ids = torch.randint(0, GPT2["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(seed))
    return model, {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def _laws_json(*args):
    proc = cli("laws", *args, "--json", "--no-numeric", "--batches", "2")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def api_gpt2():
    model, batch = _gpt2_and_batch()
    return conslaw.find_laws(model, batch, "next_token", numeric=False, batches=2)


def test_gpt2_kind_gives_the_laws_of_the_api(tmp_path, api_gpt2):
    data = _laws_json("--model-kind", "hf:gpt2", "--config", _write(tmp_path, "cfg.json", json.dumps(GPT2)))
    assert CONTRACT <= set(data) and all(LAW_KEYS <= set(law) for law in data["laws"])
    assert data["loss"] == "next_token" and data["model"] == "hf:gpt2 GPT2LMHeadModel"
    assert data["D"] == api_gpt2.D == 1080  # wte 16*8 + wpe 8*8 + one block 872 + ln_f 16 (lm_head tied)
    assert data["named_laws"] == api_gpt2.named_laws == GPT2_NAMED
    assert sorted(law["name"] for law in data["laws"]) == sorted(c.law.name for c in api_gpt2.laws)
    # the same weights and batch as the documented build: the residuals agree to the last bit
    assert sorted((law["name"], law["max_residual"]) for law in data["laws"]) == \
        sorted((c.law.name, c.max_residual) for c in api_gpt2.laws)
    assert "lm_head.weight" not in {p for law in data["laws"] for p in law["params"]}


def test_model_file_returning_an_hf_model_and_a_batch_dict(tmp_path, api_gpt2):
    src = f"""
import torch, transformers

def build():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{GPT2!r}))
    ids = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))
    return model, {{"input_ids": ids, "attention_mask": torch.ones(2, 8, dtype=torch.long)}}

def build_with_labels():
    model, batch = build()
    return model, {{**batch, "labels": batch["input_ids"].clone()}}
"""
    path = _write(tmp_path, "gpt2_model.py", src)
    data = _laws_json(f"{path}:build")
    assert data["loss"] == "next_token"  # the natural loss of a *LMHeadModel
    assert data["named_laws"] == GPT2_NAMED
    assert sorted(law["name"] for law in data["laws"]) == sorted(c.law.name for c in api_gpt2.laws)
    labelled = _laws_json(f"{path}:build_with_labels")
    assert labelled["loss"] == "model" and labelled["named_laws"] == GPT2_NAMED


def test_next_token_loss_is_the_one_hugging_face_returns():
    model, batch = _gpt2_and_batch(seq=6, batch=3)
    labels = torch.randint(0, 16, (3, 6), generator=torch.Generator().manual_seed(1))
    labels[0, 3:] = -100
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(30.0)  # logits far from uniform: a wrong shift would show
        out = model(**batch, labels=labels)
    ours = BUILTIN_LOSSES["next_token"].fn(out.logits, labels)
    assert out.loss.dtype == torch.float32  # Hugging Face upcasts the logits to float32 for its loss
    assert torch.allclose(ours, out.loss.double(), rtol=1e-6, atol=0)
    unshifted = BUILTIN_LOSSES["cross_entropy"].fn(out.logits, labels)
    assert abs(unshifted - out.loss.double()) > 0.05 * out.loss  # measured: 4.06 unshifted vs 4.50


def test_masked_positions_are_ignored_like_hugging_face_labels():
    model, batch = _gpt2_and_batch(seq=6, batch=2)
    batch["attention_mask"][1, 4:] = 0  # right padding of the second example
    fields = LossGradFields(model, batch, "next_token", batch=2)
    x, y = fields.sample(3, torch.Generator().manual_seed(0))
    assert (y[:, 1, 4:] == -100).all() and (y[:, 0] >= 0).all() and (y[:, 1, :4] >= 0).all()
    theta = fields.theta()
    for k in range(3):
        call = {**{key: v[k] for key, v in x.items()}, "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            want = model(**call, labels=y[k]).loss
        got = fields.loss_value(theta, ({key: v[k] for key, v in x.items()}, y[k]))
        assert torch.allclose(got, want.double(), rtol=1e-6, atol=0)  # Hugging Face's loss is float32
    # the model's own loss: its sampled labels are ignored at the padding too
    own = LossGradFields(model, {**batch, "labels": batch["input_ids"].clone()}, "model", batch=2)
    x, _ = own.sample(3, torch.Generator().manual_seed(0))
    assert (x["labels"][:, 1, 4:] == -100).all() and (x["labels"][:, 0] >= 0).all()


def test_user_loss_file_equals_the_builtin(tmp_path):
    path = _write(tmp_path, "my_loss.py", "def my_mse(output, target):\n    return ((output - target) ** 2).mean()\n")
    mine = json.loads(cli("laws", "mlp", "--loss", f"{path}:my_mse", "--json").stdout)
    builtin = json.loads(cli("laws", "mlp", "--loss", "mse", "--json").stdout)
    assert mine["loss"] == "my_mse" and builtin["loss"] == "mse"
    # MLP 6-8-5-3 with biases: one law per hidden ReLU unit, 8 + 5 = 13 (Prop 3.5), named == numeric
    assert mine["named_laws"] == builtin["named_laws"] == 13 == mine["numeric_laws"] == builtin["numeric_laws"]
    assert [law["formula"] for law in mine["laws"]] == [law["formula"] for law in builtin["laws"]]
    assert [law["max_residual"] for law in mine["laws"]] == [law["max_residual"] for law in builtin["laws"]]


def test_user_loss_object_equals_the_builtin_on_gpt2(tmp_path, api_gpt2):
    src = """
import torch.nn.functional as F
from conslaw.fields.losses import Loss, class_targets

def shifted(output, target):
    return F.cross_entropy(output[:, :-1].reshape(-1, output.shape[-1]), target[:, 1:].reshape(-1))

LM_LOSS = Loss("shifted", shifted, class_targets, softmax=True, masked=True)
"""
    cfg = _write(tmp_path, "cfg.json", json.dumps(GPT2))
    data = _laws_json("--model-kind", "hf:gpt2", "--config", cfg, "--loss", f"{_write(tmp_path, 'l.py', src)}:LM_LOSS")
    assert data["loss"] == "shifted" and data["named_laws"] == GPT2_NAMED
    assert sorted(law["name"] for law in data["laws"]) == sorted(c.law.name for c in api_gpt2.laws)


@pytest.mark.parametrize("case", ["bad-kind", "no-prefix", "missing-field", "missing-mlp", "bad-json", "no-config",
                                  "auto-no-type", "type-mismatch", "too-long", "loss-no-function", "loss-unknown",
                                  "both"])
def test_user_errors_exit_2_with_one_line_and_a_fix(tmp_path, case):
    cfg = _write(tmp_path, "cfg.json", json.dumps(GPT2))
    missing = _write(tmp_path, "missing.json", json.dumps({k: v for k, v in GPT2.items() if k != "n_embd"}))
    loss_file = _write(tmp_path, "losses.py", "def other(output, target):\n    return output.sum()\n")
    args, words = {
        "bad-kind": (["--model-kind", "keras:gpt2", "--config", cfg], "unknown model kind 'keras:gpt2'"),
        "no-prefix": (["--model-kind", "gpt2", "--config", cfg], "unknown model kind"),
        "missing-field": (["--model-kind", "hf:gpt2", "--config", missing], "lacks n_embd"),
        "missing-mlp": (["--model-kind", "hf:llama", "--config", _write(tmp_path, "l.json", json.dumps(
            {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8, "vocab_size": 16}))],
                        "lacks intermediate_size"),
        "bad-json": (["--model-kind", "hf:gpt2", "--config", _write(tmp_path, "bad.json", "{n_layer: 1")],
                     "is not valid JSON"),
        "no-config": (["--model-kind", "hf:gpt2"], "needs --config"),
        "auto-no-type": (["--model-kind", "hf:auto", "--config", cfg], "has no 'model_type'"),
        "type-mismatch": (["--model-kind", "hf:bert", "--config",
                           _write(tmp_path, "t.json", json.dumps({**GPT2, "model_type": "gpt2"}))],
                          "says model_type 'gpt2'"),
        "too-long": (["--model-kind", "hf:gpt2", "--config", cfg, "--seq-len", "9"], "longer than the config's 8"),
        "loss-no-function": (["mlp", "--loss", f"{loss_file}:mine"], "has no 'mine'"),
        "loss-unknown": (["mlp", "--loss", "hinge"], "unknown loss 'hinge'"),
        "both": (["mlp", "--model-kind", "hf:gpt2", "--config", cfg], "got both MODEL"),
    }[case]
    proc = cli("laws", *args, "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("conslaw: error:")]
    assert len(lines) == 1 and words in lines[0] and "; fix: " in lines[0], proc.stderr


def test_model_loss_without_labels_is_a_user_error(tmp_path):
    src = "import torch\nfrom torch import nn\n\ndef build():\n    return nn.Linear(3, 2), torch.randn(4, 3)\n"
    proc = cli("laws", f"{_write(tmp_path, 'lin.py', src)}:build", "--loss", "model")
    assert proc.returncode == 2 and "needs 'labels' in the example batch" in proc.stderr and "fix:" in proc.stderr


def test_unknown_config_key_is_a_warning_with_a_suggestion(tmp_path):
    cfg = _write(tmp_path, "cfg.json", json.dumps({**GPT2, "n_layers": 3}))
    # the CLI prints warnings as 'conslaw: warning: ...' lines; the test suite turns them into errors: catch it
    with pytest.warns(UserWarning, match=r"config key 'n_layers' is not a field of GPT2Config.*did you mean "
                                         r"'n_layer'\?"):
        proc = cli("laws", "--model-kind", "hf:gpt2", "--config", cfg, "--no-numeric", "--batches", "2")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind, config, cls, loss", [
    ("hf:bert", {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8, "intermediate_size": 16,
                 "vocab_size": 16, "max_position_embeddings": 8, "num_labels": 3},
     "BertForSequenceClassification", "cross_entropy"),
    ("hf:llama", {"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_size": 8,
                  "intermediate_size": 16, "vocab_size": 16, "max_position_embeddings": 8},
     "LlamaForCausalLM", "next_token"),
    ("hf:t5", {"d_model": 8, "d_ff": 16, "d_kv": 4, "num_layers": 1, "num_heads": 2, "vocab_size": 16},
     "T5ForConditionalGeneration", "cross_entropy"),
    ("hf:auto", {"model_type": "qwen2", "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                 "hidden_size": 8, "intermediate_size": 16, "vocab_size": 16, "max_position_embeddings": 8},
     "Qwen2ForCausalLM", "next_token"),
])
def test_other_hf_kinds_build_their_natural_head_and_loss(tmp_path, kind, config, cls, loss):
    data = _laws_json("--model-kind", kind, "--config", _write(tmp_path, "c.json", json.dumps(config)))
    assert data["model"] == f"{kind} {cls}" and data["loss"] == loss
    config_cls = transformers.CONFIG_MAPPING[config.get("model_type", kind[3:])]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        want = getattr(transformers, cls)(config_cls(**{k: v for k, v in config.items() if k != "model_type"}))
    assert data["D"] == sum(p.numel() for p in want.parameters())
    assert data["named_laws"] > 0 and not [law for law in data["laws"] if law["status"] == "failed"]
    # token ids of every input (the decoder's too) over the whole vocabulary
    assert all("input_ids: uniform in [0, 16)" in part for part in data["notes"][0].split("; ")
               if "input_ids" in part)


@pytest.mark.slow
def test_model_loss_counts_like_next_token_on_gpt2(tmp_path):
    """Hugging Face's own loss (labels = input_ids) and next_token give the same Lie count (measured: 150,
    spectral gap ~1e4; 143 of them named: 122 + the 21 new laws of the never-read rows wpe[5:8]; the 7 others
    are the last position's row wpe[4], which reaches no target under a causal next-token loss)."""
    cfg = _write(tmp_path, "cfg.json", json.dumps(GPT2))
    counts = []
    for loss in ("next_token", "model"):
        proc = cli("laws", "--model-kind", "hf:gpt2", "--config", cfg, "--seq-len", "5", "--loss", loss, "--json",
                   "--batches", "2")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        counts.append(data["numeric_laws"])
        assert data["numeric_spectral_gap"] > 1e3 and data["named_laws"] == GPT2_NAMED + 21
    assert counts == [150, 150]


@pytest.mark.slow
def test_readme_gpt2_example(tmp_path):
    """README's example: 122 named, 129 counted by the engine, 7 unnamed (measured, init std 0.5, seq 8): the
    entries of wpe[7], the last position, which under next_token has no target and feeds no other position
    (causal attention): zero gradient, 8 entries of which the row sum is named."""
    proc = cli("laws", "--model-kind", "hf:gpt2", "--config", _write(tmp_path, "cfg.json", json.dumps(GPT2)), "--json")
    data = json.loads(proc.stdout)
    assert (data["D"], data["named_laws"], data["numeric_laws"], data["unnamed_laws"]) == (1080, 122, 129, 7)


VIT = {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 8, "num_heads": 2, "num_classes": 3}


def test_timm_kind_gives_the_laws_of_the_api(tmp_path):
    timm = pytest.importorskip("timm")
    data = _laws_json("--model-kind", "timm:vit_tiny_patch16_224", "--config",
                      _write(tmp_path, "vit.json", json.dumps(VIT)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # default: batch 2, img_size
    api = conslaw.find_laws(model, x, "cross_entropy", numeric=False, batches=2)
    assert data["loss"] == "cross_entropy" and data["D"] == api.D == sum(p.numel() for p in model.parameters())
    assert data["named_laws"] == api.named_laws == 329  # measured
    assert sorted(law["name"] for law in data["laws"]) == sorted(c.law.name for c in api.laws)


def test_torchvision_kind_is_the_seeded_torchvision_model(tmp_path):
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    from conslaw.models.kinds import build_kind
    from conslaw.vision import import_torchvision

    torchvision = import_torchvision()
    built = build_kind("torchvision:resnet18", _write(tmp_path, "r.json", json.dumps({"num_classes": 3})),
                       input_shape=[2, 3, 16, 16], seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        want = torchvision.models.resnet18(num_classes=3)
    got, ref = built.module.state_dict(), want.state_dict()
    assert list(got) == list(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    assert built.example.shape == (2, 3, 16, 16) and built.loss == "cross_entropy" and not built.module.training
    proc = cli("laws", "--model-kind", "torchvision:resnet81")
    assert proc.returncode == 2 and "torchvision has no model 'resnet81'; fix: use one of resnet18" in proc.stderr


def test_a_forward_returning_a_dict_of_logits_runs_in_every_model_command(tmp_path):
    src = ("import torch\nfrom torch import nn\n\nclass M(nn.Module):\n    def __init__(self):\n"
           "        super().__init__()\n        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)\n\n"
           "    def forward(self, x):\n        return {'logits': self.b(torch.relu(self.a(x)))}\n\n"
           "def build():\n    return M(), torch.randn(4, 3)\n")
    spec = f"{_write(tmp_path, 'dictout.py', src)}:build"
    laws = json.loads(cli("laws", spec, "--json").stdout)
    assert laws["named_laws"] == laws["numeric_laws"] == 4  # one per hidden ReLU unit (Prop 3.5)
    moved = json.loads(cli("rebalance", spec, "--json").stdout)
    assert moved["laws"] == 4 and moved["max_output_change"] < 1e-12


def test_bert_model_loss_names_the_laws_of_cross_entropy(tmp_path):
    """BertForSequenceClassification's own loss (labels below num_labels) is cross-entropy: the same laws."""
    cfg = _write(tmp_path, "bert.json", json.dumps({
        "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8, "intermediate_size": 16,
        "vocab_size": 16, "max_position_embeddings": 8, "num_labels": 3}))
    own = _laws_json("--model-kind", "hf:bert", "--config", cfg, "--loss", "model")
    ce = _laws_json("--model-kind", "hf:bert", "--config", cfg)
    assert own["loss"] == "model" and ce["loss"] == "cross_entropy"
    assert "labels: uniform in [0, 3)" in own["notes"][0]
    # measured (D = 923): 75 + 7 for the never-read row 1 of token_type_embeddings (8 entries, its sum named already)
    assert own["named_laws"] == ce["named_laws"] == 82
    assert sorted(law["name"] for law in own["laws"]) == sorted(law["name"] for law in ce["laws"])
    # Prop 3.11 on the classifier (8 inputs + bias): 9 translation laws, read from the model's own loss
    assert sum(law["kind"] == "translation" and law["params"][0].startswith("classifier") for law in own["laws"]) == 9
