"""docs/examples/monitor_training.ipynb executes top to bottom (nbclient) in under two minutes."""

import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[1] / "docs" / "examples" / "monitor_training.ipynb"


@pytest.mark.slow
def test_example_notebook_executes_in_under_two_minutes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    assert seconds < 120, f"the notebook took {seconds:.0f} s"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "named: 17  D - dim Lie: 17  unnamed: 0" in text  # find_laws names every law the Lie engine counts
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert html and "<table>" in html[0] and "exact" in html[0]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # monitor.plot() displayed inline
