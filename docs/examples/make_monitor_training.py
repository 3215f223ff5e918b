"""Writes docs/examples/monitor_training.ipynb (without outputs); run from the repository root, then execute it with
nbclient to commit it with outputs:

    python docs/examples/make_monitor_training.py
    python -c "import nbformat, nbclient; p = 'docs/examples/monitor_training.ipynb'; nb = nbformat.read(p, 4); \\
        nbclient.NotebookClient(nb, kernel_name='python3').execute(); nbformat.write(nb, p)"
"""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("# From a model to its conservation laws to a monitored training run\n\n"
       "`conslaw` names the conservation laws of a PyTorch model (`find_laws`), checks them against "
       "D - dim Lie(W) (Thm 2.11 of Marcotte, Gribonval, Peyré, ICML 2025), and watches them during real "
       "training (`LawMonitor`, with Thm 2.1's weight-decay correction and Prop 5.1's bound). This notebook runs "
       "on a CPU in well under two minutes: a small CNN built from torchvision blocks, then a tiny random "
       "BERT trained by the Hugging Face `Trainer` with `conslaw.integrations.hf.LawMonitorCallback`."),
    code("%matplotlib inline\n"
         "import time\nimport warnings\n\n"
         "warnings.filterwarnings(\"ignore\", message=\"IProgress not found\")  # tqdm without ipywidgets\n\n"
         "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
         "import conslaw\nfrom conslaw.vision import import_torchvision\n\n"
         "torchvision = import_torchvision()  # works with CPU torch too\n"
         "torch.manual_seed(0)\nstart = time.perf_counter()"),
    md("## 1. A CNN from torchvision blocks and its laws\n\n"
       "Two `Conv2dNormActivation` blocks (convolution and ReLU), pooling and a linear classifier. "
       "`find_laws` traces it, collects the law families, verifies each on the model's own loss-gradient "
       "fields, and (D <= 4000) compares the count with D - dim Lie. The result shows itself as a table "
       "with each law's formula, status and residual."),
    code("Block = torchvision.ops.Conv2dNormActivation\n"
         "net = nn.Sequential(Block(3, 4, norm_layer=None), Block(4, 6, norm_layer=None), nn.AdaptiveAvgPool2d(1),\n"
         "                    nn.Flatten(), nn.Linear(6, 3))\n"
         "x = torch.randn(8, 3, 8, 8)\n"
         "found = conslaw.find_laws(net, x, \"cross_entropy\")\nfound"),
    code("print(found)\nprint('named:', found.named_laws, ' D - dim Lie:', found.lie_laws, "
         "' unnamed:', found.as_dict()['unnamed_laws'])\n"
         "for row in found.family_table():\n"
         "    print(f\"{row['family']:32s} {row['module'] or '':8s} {row['count']:3d} laws, \"\n"
         "          f\"exact {row['exact']}, worst residual {row['max_residual']:.1e}\")"),
    md("## 2. Monitoring the exact laws during SGD with weight decay\n\n"
       "`LawMonitor.attach(optimizer)` records after every (here every 5th) optimizer step; `set_loss` "
       "stores the step's loss. The relative error |h_k - h_0| / max(|h_0|, scale of the law's terms) "
       "stays small (Prop 5.1: O(sum of tau^2)), and the weight decay is undone exactly by Thm 2.1's "
       "correction theta_k e^{Lambda_k}, with Lambda read per parameter group from the optimizer."),
    code("monitor = conslaw.LawMonitor(net, found.exact(), every_n_steps=5)\n"
         "opt = torch.optim.SGD(net.parameters(), lr=0.02, weight_decay=5e-4)\n"
         "monitor.attach(opt)\n"
         "gen = torch.Generator().manual_seed(1)\n"
         "for step in range(60):\n"
         "    xb, yb = torch.randn(16, 3, 8, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)\n"
         "    opt.zero_grad()\n"
         "    loss = F.cross_entropy(net(xb), yb)\n"
         "    loss.backward()\n"
         "    monitor.set_loss(loss)\n"
         "    opt.step()\n"
         "print(monitor)\n"
         "errors = monitor.relative_errors()\n"
         "print(f'worst relative error after {monitor.steps} steps: {errors[-1].max():.2e} (corrected), '\n"
         "      f'{monitor.relative_errors(corrected=False)[-1].max():.2e} (without Thm 2.1)')\n"
         "monitor.summary()"),
    code("monitor.plot()  # a matplotlib Figure: laws grouped by family, band from best to worst law"),
    md("## 3. A Hugging Face model trained by the `Trainer`\n\n"
       "A tiny randomly initialised BERT classifier (no download). `LawMonitorCallback(laws=\"auto\")` finds "
       "its laws on the first training batch, attaches to the optimizer inside accelerate's wrapper, and adds "
       "its scalars to the Trainer's logs (so to TensorBoard or W&B when `report_to` names them). "
       "Its laws here are linear (softmax translation, into LayerNorm): SGD keeps them to round-off (float32 "
       "here: about 1e-7) once the decay is undone, whereas Adam's per-coordinate preconditioning does not conserve them (try "
       "`optim=\"adamw_torch\"`)."),
    code("import transformers\n\nfrom conslaw.integrations.hf import LawMonitorCallback\n\n"
         "config = transformers.BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8,\n"
         "                                 intermediate_size=16, vocab_size=16, max_position_embeddings=8,\n"
         "                                 num_labels=3)\n"
         "bert = transformers.BertForSequenceClassification(config)\n"
         "ids = torch.randint(0, 16, (64, 6), generator=gen)\n"
         "labels = torch.randint(0, 3, (64,), generator=gen)\n"
         "data = [{\"input_ids\": i, \"attention_mask\": torch.ones_like(i), \"labels\": y} for i, y in zip(ids, labels)]\n"
         "args = transformers.TrainingArguments(output_dir=\"/tmp/conslaw-example\", per_device_train_batch_size=4,\n"
         "                                      max_steps=16, optim=\"sgd\", learning_rate=0.05, weight_decay=0.01,\n"
         "                                      use_cpu=True,"
         "\n"
         "                                      logging_steps=8, report_to=[], save_strategy=\"no\", disable_tqdm=True)\n"
         "trainer = transformers.Trainer(model=bert, args=args, train_dataset=data)\n"
         "callback = LawMonitorCallback(laws=\"auto\", find_kwargs={\"batches\": 2}).add_to(trainer)\n"
         "trainer.train()\n"
         "print(callback.monitor)\n"
         "[log for log in trainer.state.log_history if 'conslaw/worst' in log]"),
    code("print(f'notebook ran in {time.perf_counter() - start:.0f} s')"),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "docs/examples/monitor_training.ipynb")
