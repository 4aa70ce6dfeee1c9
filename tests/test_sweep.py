import json

import numpy as np
import pytest

from conftest import make_arrays
from vaelab import cli
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.evaluation.sweep import markdown_table, run_name, sweep


@pytest.fixture
def tiny_npz(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, **make_arrays())
    return path


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_sweep_trains_evaluates_and_tabulates(tiny_npz, tmp_path, tmp_cache):
    config = TrainConfig(dataset=str(tiny_npz), latent_dim=4, epochs=1, device="cpu")
    out = tmp_path / "sweep"
    logs = []
    rows = sweep(
        "beta", [0.5, 4.0], config, out, iw_samples=5, n_samples=64, progress=False, log=logs.append
    )
    assert [r["beta"] for r in rows] == [0.5, 4.0]
    for value in ("0.5", "4"):
        run = out / f"beta-{value}"
        assert json.loads((run / "config.json").read_text())["config"]["beta"] == float(value)
        assert (run / "eval.json").is_file()
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["param"] == "beta" and len(saved["rows"]) == 2
    assert rows[0]["mean_confidence"] is not None and rows[0]["nll_iwae"] is not None
    # a larger beta buys a smaller KL (rate) at the price of reconstruction (distortion)
    assert rows[1]["kl"] < rows[0]["kl"]
    table = (out / "sweep.md").read_text()
    assert "| beta |" in table and "| 0.5 |" in table and "| 4 |" in table
    assert "I(x; z)" in table and rows[0]["mutual_information"] is not None
    # beta = 4 pulls every posterior towards the prior: less information about x in z
    assert rows[1]["mutual_information"] < rows[0]["mutual_information"]
    assert (out / "rate-distortion.png").stat().st_size > 1000

    logs.clear()  # a second call evaluates the finished runs without retraining them
    sweep("beta", [0.5], config, out, iw_samples=5, scores=False, progress=False, log=logs.append)
    assert any("already trained" in m for m in logs)


def test_sweep_rejects_bad_settings(tiny_npz, tmp_path):
    config = TrainConfig(dataset=str(tiny_npz), epochs=1)
    with pytest.raises(VaelabError, match="beta"):
        sweep("beta", [1.0, -2.0], config, tmp_path / "s")
    with pytest.raises(VaelabError, match="not a training setting"):
        sweep("colour", [1], config, tmp_path / "s")
    with pytest.raises(VaelabError, match="iw_samples must be"):
        sweep("beta", [1.0], config, tmp_path / "s", iw_samples=0)
    assert not (tmp_path / "s").exists()  # nothing trained before the arguments are checked


def test_markdown_table_marks_missing_values():
    rows = [
        {
            "beta": 1.0,
            "iw_samples": 10,
            "note": "n",
            "kl": 3.0,
            "recon": 2.0,
            "active_units": 2,
            "nll_iwae": None,
        }
    ]
    table = markdown_table(rows, "beta", TrainConfig())
    assert "| 1 | 2.00 | 3.00 |" in table and "—" in table
    assert run_name("beta", 0.5) == "beta-0.5" and run_name("latent_dim", 2) == "latent-dim-2"


def test_cli_sweep(tiny_npz, tmp_path, capsys):
    out = tmp_path / "cli-sweep"
    code = cli.main(
        [
            "sweep",
            "--beta",
            "1,2",
            "--dataset",
            str(tiny_npz),
            "--epochs",
            "1",
            "--latent-dim",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--iw-samples",
            "3",
            "--no-sample-scores",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (out / "beta-1" / "eval.json").is_file() and (out / "sweep.md").is_file()
    for bad in (["--beta", "x"], ["--beta", "1", "--iw-samples", "0"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["sweep", *bad, "--out", str(out)])
        assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_cli_sweep_writes_each_runs_report_and_refuses_nproc(tiny_npz, tmp_path, capsys, tmp_cache):
    out = tmp_path / "reported"
    argv = ["sweep", "--beta", "1,2", "--dataset", str(tiny_npz), "--epochs", "1"]
    argv += ["--latent-dim", "2", "--out", str(out), "--iw-samples", "2", "--no-sample-scores"]
    assert cli.main([*argv, "--report", "--quiet"]) == 0, capsys.readouterr().err
    for value in ("1", "2"):
        assert (out / f"beta-{value}" / "report.html").stat().st_size > 10_000
    code = cli.main([*argv[:-5], "--out", str(tmp_path / "n"), "--nproc", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--nproc" in err and not (tmp_path / "n").exists()
