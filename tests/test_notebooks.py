"""Every notebook runs top to bottom in a fresh kernel, the way JupyterLab runs it: the kernel's
working directory is notebooks/ (where the project root is not on the path: `import explorer`
must come from the installed package). A notebook passes when no cell errs (each notebook asserts
the numbers its text claims), nothing is written to stderr (a NaN in a widget's figure shows up
there as jupyter_client's "Message serialization failed"), and every figure or widget a cell
shows arrives as an output."""

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb"


def expected_displays(source: str) -> int:
    """How many displays a cell must produce: its top-level `<...>.show()` and `display(...)`
    statements (those inside if/for blocks may or may not run, so they are not counted)."""
    count = 0
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            shown = isinstance(func, ast.Attribute) and func.attr == "show"
            count += shown or (isinstance(func, ast.Name) and func.id == "display")
    return count


def test_expected_displays_counts_only_top_level_shows():
    source = "fig.show()\nif x:\n    other.show()\ndisplay(W.VBox([a, b]))\ny = f(z).show\n"
    assert expected_displays(source) == 2


def problems(nb) -> list[str]:
    """Errors, stderr text and missing displays in an executed notebook, one line each."""
    found = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code_cells, 1):
        outputs = cell.get("outputs", [])
        for out in outputs:
            if out.get("output_type") == "error":
                found.append(f"code cell {number}: {out['ename']}: {out['evalue']}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append(f"code cell {number} wrote to stderr: {out['text'][:400]}")
        shown = sum(out.get("output_type") == "display_data" for out in outputs)
        if shown < expected_displays(cell.source):
            found.append(f"code cell {number}: {expected_displays(cell.source)} displays expected, {shown} arrived")
    return found


def test_problems_flags_errors_stderr_and_missing_figures():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("fig.show()", outputs=[]),
        nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output(
            "stream", name="stderr", text="UserWarning: Message serialization failed with: Out of range float values")]),
        nbformat.v4.new_code_cell("1 / 0", outputs=[nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]),
        nbformat.v4.new_code_cell("display(w)", outputs=[nbformat.v4.new_output("display_data", data={"text/plain": "w"})]),
    ])
    found = problems(nb)
    assert len(found) == 3
    assert "1 displays expected, 0 arrived" in found[0]
    assert "serialization failed" in found[1] and "ZeroDivisionError" in found[2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_clean_from_its_folder(path):
    nb = nbformat.read(path, as_version=4)
    # The kernel is killed once the last cell has run (shutdown_kernel="immediate"): a graceful shutdown spends
    # 0.3-3 s in the kernel's exit (garbage collection over torch's and diffusers' objects) that nothing here reads.
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                            shutdown_kernel="immediate")
    client.execute()
    assert not problems(nb), "\n".join(problems(nb))
