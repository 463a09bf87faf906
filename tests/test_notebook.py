"""notebooks/simpool_demo.ipynb runs top to bottom (few steps, data subsets) and shows its results."""

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_demo_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    # One CPU device, as a user's laptop or Colab CPU: the 8 fake devices of the other tests
    # would only add compile time to the kernel and the commands it starts.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("SIMPOOL_DEMO_STEPS", "8")
    monkeypatch.setenv("SIMPOOL_DEMO_SUBSET", "500")
    monkeypatch.setenv("SIMPOOL_DEMO_WORKDIR", str(tmp_path / "run"))
    notebook = nbformat.read(ROOT / "notebooks" / "simpool_demo.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []))
    assert "source: pooler" in text  # SimPool's own attention, not a stand-in
    images = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) >= 2  # the teacher's attention grid and the IoU figure
    iou = json.loads((tmp_path / "run" / "attention" / "fashion_mnist_iou.json").read_text())
    assert iou["n"] == 100 and 0.0 <= iou["mean_iou"] <= 1.0
    knn = json.loads((tmp_path / "run" / "knn_subset.json").read_text())
    assert knn["train_examples"] == 500 and 10.0 <= knn["knn"]["10"]["top1"] <= 100.0
