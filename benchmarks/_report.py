"""The one way a benchmark script reports: its result with the machine, threads and date, printed and saved."""

from __future__ import annotations

import json
import platform
import time

import torch


def report(result: dict, json_path: str | None) -> None:
    """Add machine, torch threads and date to ``result``, print it as JSON, write it to ``json_path`` if given."""
    result = {"machine": platform.platform(), "threads": torch.get_num_threads(), **result,
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=1))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=1)
