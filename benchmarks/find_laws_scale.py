"""Time and peak memory of ``find_laws`` on real-size models (issue 12: ResNet-50 < 2 min and < 8 GB,
a 100M-parameter GPT-2 < 5 min and < 8 GB, on a 2-core machine).

Each model runs in its own process (its peak RSS is its own). Models are built from configs with
random init, no download: torchvision resnet18 / resnet50 (through conslaw.vision's shim) at 32x32
inputs (batch 2), and a GPT-2 config of about 100M parameters (12 layers, 768 wide, vocabulary
16384, 64 positions: 97.7M; sequence 16, batch 2) with next-token cross-entropy; ``gpt2-1layer`` (not in the
default list) is the same config with one layer (19.7M parameters), to see how the cost grows per layer.

Usage: python benchmarks/find_laws_scale.py [--models resnet18,resnet50,gpt2-100m] [--json OUT] [--max-rss-gb 12]

Wall time, CPU time (user + system: robust to a shared machine's load), peak RSS, and the load average
before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from _isolated import run_isolated, write_results

MODELS = ("resnet18", "resnet50", "gpt2-100m")


def one_model(which: str) -> dict:
    """Build ``which``, run find_laws once, return the numbers."""
    import torch

    from conslaw import find_laws

    torch.manual_seed(0)
    if which.startswith("resnet"):
        from conslaw.vision import import_torchvision

        model = getattr(import_torchvision().models, which)(num_classes=10)
        batch, loss = torch.randn(2, 3, 32, 32), "cross_entropy"
    else:
        from conslaw.vision import import_torchvision

        import_torchvision()  # transformers imports torchvision: the CPU-torch shim first
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_layer=1 if which == "gpt2-1layer" else 12, n_embd=768, n_head=12, vocab_size=16384,
                            n_positions=64, attn_implementation="eager")
        model = GPT2LMHeadModel(config)
        ids = torch.randint(0, config.vocab_size, (2, 16))
        batch, loss = {"input_ids": ids}, "next_token"
    params = sum(p.numel() for p in model.parameters())
    start, cpu = time.perf_counter(), os.times()
    result = find_laws(model, batch, loss, numeric=False)
    seconds, after = time.perf_counter() - start, os.times()
    return {"model": which, "parameters": params, "seconds": seconds,
            "cpu_seconds": after.user + after.system - cpu.user - cpu.system,
            "user_seconds": after.user - cpu.user, "sys_seconds": after.system - cpu.system,
            "named_laws": result.named_laws,
            "laws_listed": len(result.laws), "approximate_laws": result.approximate_laws,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "notes": result.notes, "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> None:
    """Run each model in its own process; print a line each, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--max-rss-gb", type=float, default=12.0, help="kill a run above this memory (GB)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_model(args.one)))
        return
    rows = []
    for which in args.models.split(","):
        load = os.getloadavg()
        row, error = run_isolated(__file__, "--one", which, max_rss_gb=args.max_rss_gb)
        if row is None:
            print(f"{which}: failed: {error}", flush=True)
            rows.append({"model": which, "failed": error, "load_before": load})
            continue
        row["load_before"], row["load_after"] = load, os.getloadavg()
        rows.append(row)
        print(f"{which:10s} {row['parameters']:>12,d} params  {row['seconds']:7.1f} s wall  "
              f"{row['cpu_seconds']:7.1f} s cpu  peak {row['peak_rss_mb']:7.0f} MB  named {row['named_laws']}  "
              f"(load {load[0]:.1f} before, {row['load_after'][0]:.1f} after)", flush=True)
    write_results(args.json, "models", rows)

if __name__ == "__main__":
    main()
