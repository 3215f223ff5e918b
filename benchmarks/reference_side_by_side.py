"""conslaw beside the SageMath reference's own code, network by network, in one run (issue 13).

The reference (https://github.com/sibyllema/Conservation_laws, ``main.ipynb`` parts C and D) counts
the laws of random linear and ReLU networks with ``dim_trace_lie_algebra`` on symbolic
polynomial fields. This script runs that code itself, not a port: the code cells of its four
helper notebooks are concatenated into one Sage script (IPython lines such as
``run X.ipynb`` dropped), followed by a driver that draws the networks exactly as the notebook
does (numpy seed 0 and its side draws, :func:`conslaw.bench.anchor_suite` replays the same
stream) and times each ``D - dim_trace_lie_algebra(...)``. The same networks are then counted by
:func:`conslaw.count` in this process, and the two are printed side by side.

SageMath cannot be installed on the project's CI machine; without a ``sage`` executable the script
says so and exits 0 (``{"skipped": ...}`` with ``--json``). The reference's time per network is
40-400 s even for tiny networks, hence ``--nets`` (default 5) and ``--timeout``.

Usage: python benchmarks/reference_side_by_side.py --reference DIR [--suite linear|relu]
       [--nets N] [--sage PATH] [--timeout S] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the helper notebooks, in the order main.ipynb runs them
HELPERS = ["create_generic_polynomial", "get_all_polynomial_conserved_functions",
           "get_specific_vector_fields_and_known_conserved_functions", "computation_dimension_trace_Lie_algebra"]

#: one line of the driver's output per network
MARK = "CONSLAW-SIDE-BY-SIDE "

DRIVER = '''
import json as _json
import time as _time
np.random.seed(0)
for _i in range({nets}):
    depth = np.random.randint(2, 5)
    list_dim = [int(np.random.randint(2, {high})) for _ in range(depth + 1)]
    {bias_draw}
    n_known_functions = {known}(list_dim)
    _start = _time.perf_counter()
    D, vector_fields = {fields}
    dim_found = D - dim_trace_lie_algebra(vector_fields, n_known_functions=n_known_functions, verbose=0)
    print("{mark}" + _json.dumps({{"widths": [int(w) for w in list_dim], "D": int(D), "num_laws": int(dim_found),
                                  "seconds": _time.perf_counter() - _start}}), flush=True)
'''


def notebook_code(path: Path) -> str:
    """The code cells of a notebook as one script, without IPython-only lines (``run``, ``%``, ``!``)."""
    cells = json.loads(path.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            stripped = line.strip()
            if stripped.startswith(("run ", "%", "!")):
                continue
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def sage_script(reference: Path, suite: str, nets: int) -> str:
    """The reference's helper code followed by the driver for ``nets`` networks of ``suite``."""
    missing = [name for name in HELPERS if not (reference / f"{name}.ipynb").exists()]
    if missing:
        raise SystemExit(f"error: {reference} is not a checkout of sibyllema/Conservation_laws: missing "
                         f"{', '.join(m + '.ipynb' for m in missing)}\nfix: git clone "
                         "https://github.com/sibyllema/Conservation_laws and pass its folder to --reference")
    code = "\n".join(notebook_code(reference / f"{name}.ipynb") for name in HELPERS)
    if suite == "linear":
        # the notebook's linear loop (part C) draws rand(D) twice inside its two helper calls; they run below
        driver = DRIVER.format(nets=nets, high=6, bias_draw="", known="known_conserved_functions_linear",
                               fields="vector_fields_for_q_layer_LNN(list_dim)", mark=MARK)
    else:
        driver = DRIVER.format(nets=nets, high=10, bias_draw="bias = bool(np.random.random() < 0.5)",
                               known="known_conserved_functions_ReLU",
                               fields="vector_fields_ReLU_q_layers(list_dim, bias=bias)", mark=MARK)
    return code + "\n" + driver


def parse_reference(output: str) -> list[dict]:
    """The driver's per-network records from the Sage run's standard output."""
    return [json.loads(line[len(MARK):]) for line in output.splitlines() if line.startswith(MARK)]


def run_reference(sage: str, script: str, timeout: float) -> tuple[list[dict], str | None]:
    """Run the Sage script; the records it printed, and why it stopped early (None when it finished)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "side_by_side.sage"
        path.write_text(script)
        env = {**os.environ, "SAGE_NUM_THREADS": str(os.cpu_count() or 1)}
        try:
            done = subprocess.run([sage, str(path)], cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return parse_reference(out), f"stopped after {timeout:g} s (--timeout)"
    stopped = None if done.returncode == 0 else f"sage exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return parse_reference(done.stdout), stopped


def run_conslaw(suite: str, nets: int) -> list[dict]:
    """conslaw's count of the same networks, each timed (after a one-time warm-up)."""
    from conslaw.bench import anchor_suite
    from conslaw.catalog import linear, relu
    from conslaw.count import count

    count(linear(2, 2, 2))
    rows = []
    for i, net in enumerate(anchor_suite(suite, nets)):
        arch = linear(*net.widths) if suite == "linear" else relu(*net.widths, bias=net.bias)
        start = time.perf_counter()
        result = count(arch, seed=i)
        rows.append({"widths": net.widths[::-1], "D": result.lie.D, "num_laws": result.num_laws,
                     "known_laws": result.known_laws, "seconds": time.perf_counter() - start})
    return rows


def side_by_side(reference: list[dict], ours: list[dict]) -> list[dict]:
    """One row per network the reference finished: both counts and times, and the speed-up."""
    rows = []
    for ref, own in zip(reference, ours, strict=False):
        if ref["widths"] != own["widths"]:
            raise SystemExit(f"error: the reference drew widths {ref['widths']} where conslaw drew "
                             f"{own['widths']}: the two network streams differ")
        rows.append({"widths": own["widths"], "D": own["D"], "reference_laws": ref["num_laws"],
                     "conslaw_laws": own["num_laws"], "reference_seconds": ref["seconds"],
                     "conslaw_seconds": own["seconds"], "speedup": ref["seconds"] / max(own["seconds"], 1e-9)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of sibyllema/Conservation_laws")
    parser.add_argument("--suite", choices=("linear", "relu"), default="linear")
    parser.add_argument("--nets", type=int, default=5)
    parser.add_argument("--sage", default="sage", help="the SageMath executable")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole reference run")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)
    sage = shutil.which(args.sage)
    if sage is None:
        reason = f"SageMath is not installed ({args.sage!r} not found): the reference cannot run here"
        if args.json:
            print(json.dumps({"skipped": reason}))
            Path(args.json).write_text(json.dumps({"skipped": reason}) + "\n")
        else:
            print(f"skipped: {reason}")
        return 0
    script = sage_script(args.reference, args.suite, args.nets)
    reference, stopped = run_reference(sage, script, args.timeout)
    rows = side_by_side(reference, run_conslaw(args.suite, args.nets))
    for row in rows:
        print(f"{row['widths']!s:<22} D={row['D']:>4}  laws {row['reference_laws']:>3} | {row['conslaw_laws']:>3}"
              f"  reference {row['reference_seconds']:9.2f} s  conslaw {row['conslaw_seconds']:7.3f} s"
              f"  x{row['speedup']:,.0f}")
    if stopped:
        print(f"reference: {stopped}; {len(rows)} of {args.nets} networks compared", file=sys.stderr)
    if args.json:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import report

        report({"suite": args.suite, "nets": args.nets, "compared": len(rows), "stopped": stopped,
                "networks": rows}, args.json)
    return 0 if rows and all(r["reference_laws"] == r["conslaw_laws"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
