"""Mutation of the module-level constants and class attributes mutmut 3 does not mutate (benchmarks/MUTATION.md).

Each mutant is one textual replacement in a copy of ``src`` (numeric thresholds times 10 and divided by 10,
oversampling factors set to 0); the test selection runs with ``-x`` against the copy. Usage, from the
repository root:  python benchmarks/mutate_constants.py [pytest args ...]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SELECTION = ["tests/test_catalog_counts.py", "tests/test_lie_reference.py", "tests/test_fields.py",
             "tests/test_laws.py", "tests/test_block_laws.py", "tests/test_params.py", "tests/test_mutation_kills.py",
             "-k", "not scale_ladder"]

# (file, original text, mutated text)
MUTANTS = [
    ("rank.py", "DEFAULT_RTOL = 1e-8", "DEFAULT_RTOL = 1e-7"),
    ("rank.py", "DEFAULT_RTOL = 1e-8", "DEFAULT_RTOL = 1e-9"),
    ("rank.py", "GAP_WARNING = 1e3", "GAP_WARNING = 1e4"),
    ("rank.py", "GAP_WARNING = 1e3", "GAP_WARNING = 1e2"),
    ("laws/verify.py", "EXACT = 1e-10", "EXACT = 1e-9"),
    ("laws/verify.py", "EXACT = 1e-10", "EXACT = 1e-11"),
    ("laws/verify.py", "SHARE_FLOOR = 1e-4", "SHARE_FLOOR = 1e-3"),
    ("laws/verify.py", "SHARE_FLOOR = 1e-4", "SHARE_FLOOR = 1e-5"),
    ("fields/inputs.py", "SPREAD = 3.0", "SPREAD = 30.0"),
    ("fields/inputs.py", "SPREAD = 3.0", "SPREAD = 0.3"),
    ("fields/loss_grad.py", "VMAP_MAX_D = 200_000", "VMAP_MAX_D = 0"),
    ("fields/model.py", "oversample = 0.25", "oversample = 0.0"),
    ("fields/model.py", "oversample = 0.25", "oversample = 2.5"),
    ("fields/sign.py", "oversample = 3.0", "oversample = 0.0"),
    ("fields/loss_grad.py", "oversample = 3.0", "oversample = 0.0"),
    ("fields/base.py", "oversample: float = 0.0", "oversample: float = 1.0"),
]


def main(extra: list[str]) -> None:
    root = Path(__file__).resolve().parents[1]
    results = []
    for rel, old, new in MUTANTS:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(root / "src", Path(tmp) / "src")
            path = Path(tmp) / "src" / "conslaw" / rel
            text = path.read_text()
            assert text.count(old) == 1, (rel, old)
            path.write_text(text.replace(old, new))
            env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *SELECTION,
                                   *extra], cwd=root, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        status = "killed" if proc.returncode == 1 else "survived" if proc.returncode == 0 else f"rc {proc.returncode}"
        results.append({"file": rel, "mutant": f"{old} -> {new}", "status": status, "seconds": round(seconds, 1),
                        "killed_by": failed[:1]})
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
