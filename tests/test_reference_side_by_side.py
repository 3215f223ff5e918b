"""benchmarks/reference_side_by_side.py: notebook extraction, the Sage driver, parsing, and the skip without Sage.

SageMath is not installable here: the Sage run itself is replaced by a fake ``sage`` executable that
checks the script it is given and prints the driver's records for the suite's networks.
"""

import json
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import reference_side_by_side as side


def fake_reference(folder: Path) -> Path:
    for name in side.HELPERS:
        cells = [{"cell_type": "markdown", "source": ["# notes"]},
                 {"cell_type": "code", "source": ["run create_generic_polynomial.ipynb\n", f"def {name}_fn():\n",
                                                  "    return 1\n", "%time x = 1\n"]}]
        (folder / f"{name}.ipynb").write_text(json.dumps({"cells": cells}))
    return folder


def test_script_has_the_helpers_code_without_ipython_lines_and_the_driver(tmp_path):
    script = side.sage_script(fake_reference(tmp_path), "relu", 3)
    assert all(f"def {name}_fn():" in script for name in side.HELPERS)
    assert "run create_generic_polynomial" not in script and "%time" not in script and "# notes" not in script
    assert "np.random.seed(0)" in script and "for _i in range(3):" in script
    assert "vector_fields_ReLU_q_layers(list_dim, bias=bias)" in script and "randint(2, 10)" in script
    linear = side.sage_script(tmp_path, "linear", 2)
    assert "vector_fields_for_q_layer_LNN(list_dim)" in linear and "randint(2, 6)" in linear


def test_missing_notebooks_are_an_error_with_the_fix(tmp_path):
    with pytest.raises(SystemExit, match=r"git clone https://github\.com/sibyllema/Conservation_laws"):
        side.sage_script(tmp_path, "linear", 1)


def test_without_sage_the_comparison_is_skipped(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert side.main(["--reference", str(tmp_path), "--sage", "no-such-sage-here", "--json", str(out)]) == 0
    assert "SageMath is not installed" in json.loads(capsys.readouterr().out)["skipped"]
    assert "SageMath is not installed" in json.loads(out.read_text())["skipped"]


def test_side_by_side_with_a_fake_sage(tmp_path, capsys):
    from conslaw.bench import anchor_suite
    from conslaw.catalog import relu

    records = []
    for net in anchor_suite("relu", 3):  # what the reference prints: widths output first, its own count
        arch = relu(*net.widths, bias=net.bias)
        records.append(side.MARK + json.dumps({"widths": net.widths[::-1], "D": arch.space.D,
                                               "num_laws": arch.expected, "seconds": 40.0}))
    sage = tmp_path / "sage"
    sage.write_text("#!" + sys.executable + "\nimport sys\nscript = open(sys.argv[1]).read()\n"
                    "assert 'def computation_dimension_trace_Lie_algebra_fn' in script\n"
                    f"print({chr(10).join(records)!r})\n")
    sage.chmod(sage.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out.json"
    assert side.main(["--reference", str(fake_reference(tmp_path)), "--suite", "relu", "--nets", "3",
                      "--sage", str(sage), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["compared"] == 3 and result["stopped"] is None
    for row in result["networks"]:
        assert row["reference_laws"] == row["conslaw_laws"] and row["speedup"] > 1
