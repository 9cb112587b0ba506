"""``examples/experiment_tutorial.ipynb``: committed without outputs, runs top to bottom in a
real Jupyter kernel (nbclient + ipykernel) (issue 15, point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "experiment_tutorial.ipynb"


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def text_of(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
        parts.append(output.get("data", {}).get("text/html", ""))
    return "".join(parts)


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    source = "\n".join(cell.source for cell in code_cells(notebook))
    for needed in ("sb.run_sweep(", "load_results(", "plot_tradeoff("):
        assert needed in source


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_a_kernel(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    cells = code_cells(notebook)
    assert all(cell.execution_count for cell in cells)
    sweep = next(cell for cell in cells if "sb.run_sweep(" in cell.source)
    assert "9 runs: 9 succeeded, 0 failed" in text_of(sweep)
    table = next(cell for cell in cells if "load_results(" in cell.source)
    assert "GlobalMagWeight" in text_of(table) and "finetuned_top1" in text_of(table)
    plot = next(cell for cell in cells if "plot_tradeoff(" in cell.source)
    assert any("image/png" in output.get("data", {}) for output in plot.outputs)
    assert len(list((tmp_path / "results" / "tutorial" / "runs").iterdir())) == 9
