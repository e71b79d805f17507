"""Execute notebooks/quickstart.ipynb top to bottom on a small real corpus."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

from jupyter_client.manager import KernelManager  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
DOCUMENTS = (REPO / ".." / "shared" / "data" / "documents").resolve()
CORPUS_FILES = (
    DOCUMENTS / "text" / "llama2c_README.md",
    DOCUMENTS / "pdf" / "attention_is_all_you_need_neurips2017.pdf",
)
QUESTION = "What does the Transformer use instead of recurrence?"
# Printed by a cell the test appends to its in-memory copy of the notebook.
EXECUTABLE_MARKER = "KERNEL_EXECUTABLE="


class CurrentPythonKernelManager(KernelManager):
    """Starts the python3 kernel with this interpreter, whatever kernelspec is installed."""

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        return [sys.executable, *cmd[1:]]


def _text_of(output: dict) -> str:
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    data = output.get("data", {})
    return str(data.get("text/plain", "")) + str(data.get("text/markdown", ""))


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [p for p in CORPUS_FILES if not p.is_file()]
    if missing:
        pytest.skip(f"shared documents not found: {missing}")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for src in CORPUS_FILES:
        shutil.copy(src, corpus / src.name)

    # The kernel inherits this process's environment when it starts.
    monkeypatch.setenv("RAG_NOTEBOOK_CORPUS", str(corpus))
    monkeypatch.setenv("RAG_NOTEBOOK_QUESTION", QUESTION)
    # Settings.load() reads RAG_* variables: keep the user's other ones out of the run.
    for name in list(os.environ):
        if name.startswith("RAG_") and not name.startswith("RAG_NOTEBOOK_"):
            monkeypatch.delenv(name)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    n_cells = len(nb.cells)
    nb.cells.append(
        nbformat.v4.new_code_cell(f"import sys; print({EXECUTABLE_MARKER!r} + sys.executable)")
    )

    km = CurrentPythonKernelManager(kernel_name="python3")
    client = nbclient.NotebookClient(
        nb,
        km=km,
        kernel_name="python3",
        timeout=600,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code_cells = [c for c in nb.cells[:n_cells] if c.cell_type == "code"]
    errors = [o for c in code_cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors

    executable = "".join(_text_of(o) for o in nb.cells[-1].outputs).strip()
    assert executable.startswith(EXECUTABLE_MARKER), executable
    ran_with = executable.removeprefix(EXECUTABLE_MARKER)
    assert Path(ran_with).absolute() == Path(sys.executable).absolute()

    images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no plot"

    answer_cells = [c for c in code_cells if any(_text_of(o).startswith("Q: ") for o in c.outputs)]
    assert answer_cells, "no cell printed the answer"
    printed = "".join(_text_of(o) for o in answer_cells[0].outputs)
    assert "A: " in printed
    cited = printed.split("Cited passages:", 1)
    assert len(cited) == 2, f"the answer cites no passage:\n{printed}"
    assert any(p.name in cited[1] for p in CORPUS_FILES), printed
