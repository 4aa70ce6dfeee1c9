"""notebooks/practicum.ipynb: stored without outputs, and runs end to end.

The run test executes the whole notebook with small parameters (2 epochs on 2,000 MNIST
training images, a 300-point t-SNE, K = 20) in a fresh kernel in a temporary folder, and
checks that every figure of the lecture was written and shown. ``make notebook-strip``
removes outputs before a commit.
"""

from __future__ import annotations

import base64
import json
import re
import sys

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "practicum.ipynb"
MARKER = ".made-by-practicum-notebook"
QUICK = {
    "EPOCHS": 2,
    "LIMIT": 2000,
    "LATENT_DIM": 20,
    "HIDDEN_2D": 400,
    "N_POINTS": 300,
    "IWAE_K": 20,
    "N_EVAL": 200,
    "SAMPLE_SCORES": False,
    "DEVICE": "cpu",
    "RUNS": "runs/notebook",
}


def parameter_cells(cells: list) -> list:
    return [c for c in cells if "parameters" in c["metadata"].get("tags", [])]


def test_committed_notebook_has_no_outputs_or_execution_counts():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    for i, cell in enumerate(code):
        assert cell["outputs"] == [], f"code cell {i} has outputs: run `make notebook-strip`"
        assert cell["execution_count"] is None, f"code cell {i} has an execution count"
        assert "execution" not in cell["metadata"], f"code cell {i} keeps execution times"
    assert len(parameter_cells(nb["cells"])) == 1, "exactly one cell must be tagged parameters"


def with_parameters(nb, values: dict) -> None:
    """Replace the source of the cell tagged ``parameters`` by ``values`` (papermill's
    convention); every parameter the notebook declares must be given."""
    (cell,) = parameter_cells(nb.cells)
    declared = set(re.findall(r"^([A-Z][A-Z0-9_]*) =", cell.source, flags=re.M))
    assert declared == set(values), f"the notebook declares {sorted(declared)}"
    cell.source = "\n".join(f"{name} = {value!r}" for name, value in values.items())


def shown_images(nb) -> list[bytes]:
    """The bytes of every PNG and GIF the executed notebook displays."""
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for mime in ("image/png", "image/gif"):
                if mime in output.get("data", {}):
                    out.append(base64.b64decode(output["data"][mime]))
    return out


def text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_runs_end_to_end_and_shows_every_figure(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    with_parameters(nb, QUICK)
    runs = tmp_path / QUICK["RUNS"]
    stale = runs / "vae"  # left by an earlier execution: the notebook must replace it
    stale.mkdir(parents=True)
    (stale / MARKER).touch()
    (stale / "config.json").write_text("{}")

    # A kernel spec of our own, first on JUPYTER_PATH: the kernel is this very Python (the
    # one with vaelab), whatever kernels the user has installed.
    spec = tmp_path / "jupyter" / "kernels" / "vaelab-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "vaelab", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # One torch thread in the kernel: on a shared 2-core machine a second thread that
    # waits for a busy core at every operation made this test 5-10x slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = NotebookClient(
        nb, timeout=600, kernel_name="vaelab-test", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    vae, ae, d2 = runs / "vae", runs / "ae", runs / "vae-2d"
    cvae, cvae_1 = runs / "cvae", runs / "cvae-beta1"
    expected = [
        runs / "mnist-examples.png",
        runs / "reparameterisation.png",
        runs / "kl-terms.png",
        vae / "figures" / "losses.png",
        vae / "figures" / "reconstructions.png",
        vae / "figures" / "samples.png",
        vae / "figures" / "samples-by-epoch.png",
        vae / "figures" / "embeddings-tsne.png",
        vae / "figures" / "kl-per-dim.png",
        vae / "figures" / "traversal.png",
        vae / "figures" / "latent-use.png",
        ae / "figures" / "reconstructions.png",
        ae / "figures" / "samples.png",
        d2 / "figures" / "bubbles.png",
        d2 / "figures" / "bubbles.gif",
        d2 / "figures" / "manifold.png",
        cvae / "figures" / "samples.png",  # one row per label
        cvae_1 / "figures" / "relabel.png",
        cvae / "figures" / "relabel.png",
    ]
    interpolations = sorted((vae / "figures").glob("interpolation-*-linear.png"))
    assert len(interpolations) == 2  # 5 -> 4 and 3 -> 8
    expected += interpolations + sorted((ae / "figures").glob("interpolation-*-linear.png"))
    assert len(expected) == 22
    shown = shown_images(nb)
    for path in expected:
        assert path.is_file(), f"{path.relative_to(tmp_path)} was not written"
        assert path.read_bytes() in shown, f"{path.relative_to(tmp_path)} was not shown"
    assert len(shown) == len(expected)

    # The lecture's epochs follow the parameters: 0, middle and last of 2 epochs.
    for epoch in (0, 1, 2):
        assert (vae / "embeddings" / f"epoch-{epoch:03d}-tsne.npz").is_file()
        assert (vae / "latents" / f"epoch-{epoch:03d}.npz").is_file()
    assert not (vae / "latents" / "epoch-003.npz").exists()
    assert (vae / MARKER).is_file() and json.loads((vae / "config.json").read_text())["finished"]
    metrics = [json.loads(line) for line in (vae / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]

    result = json.loads((vae / "eval.json").read_text())
    assert result["n_images"] == QUICK["N_EVAL"] and result["iw_samples"] == QUICK["IWAE_K"]
    assert result["nll_iwae"] <= result["neg_elbo"] + 1.0
    text = text_of(nb)
    assert f"IWAE bound, K = {QUICK['IWAE_K']}" in text and "sample scores skipped" in text
    assert "label accuracy skipped" in text
    for run in (cvae, cvae_1):
        assert json.loads((run / "config.json").read_text())["config"]["condition"] == "label"
    assert "| q = p: mu 0, var 1 | 0.0000 | 0.0000 |" in text  # the KL check's table
