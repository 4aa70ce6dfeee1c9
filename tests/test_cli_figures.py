"""The figure commands: each writes its files and prints their paths; every bad input is
one line on stderr and exit code 2; ``train --report`` writes the page at the end."""

import sys

import pytest
from PIL import Image

from conftest import call_cli as call
from conftest import make_arrays, train_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("cli-figures"))


def written(capsys, *argv):
    code, out, err = call(capsys, *argv)
    assert code == 0, err
    paths = [line for line in out.splitlines() if line]
    for p in paths:
        with Image.open(p) as im:
            assert im.size[0] > 0
    return paths


@pytest.mark.parametrize(
    "argv, names",
    [
        (["sample", "--n", "9", "--seed", "2"], ["samples.png"]),
        (["reconstruct", "--n", "8", "--epochs", "0,2"], ["reconstructions.png"]),
        (["interpolate", "--a", "0", "--b", "5", "--steps", "4"], ["interpolation-0-5-linear.png"]),
        (["interpolate", "--digits", "1", "2", "--mode", "slerp"], None),
        (["embed", "--method", "pca", "--n", "30"], ["embeddings-pca.png"]),
        (["bubbles", "--n", "40", "--epochs", "2"], ["bubbles.png", "bubbles.gif"]),
        (["manifold", "--grid", "5"], ["manifold.png"]),
        (["traverse", "--steps", "5"], ["traversal.png"]),
        (["traverse", "--dims", "3,1", "--range", "2", "--index", "4"], ["traversal-4.png"]),
    ],
)
def test_each_figure_command_writes_its_files(capsys, run, tmp_path, argv, names):
    paths = written(capsys, *argv[:1], run, "--out", tmp_path, *argv[1:])
    assert paths and all(p.startswith(str(tmp_path)) for p in paths)
    if names is not None:
        assert [p.rsplit("/", 1)[1] for p in paths] == names


def test_default_out_is_the_run_figures_folder(capsys, run):
    (path,) = written(capsys, "sample", run, "--n", "4")
    assert path == str(run / "figures" / "samples.png")


def test_report_and_compare_commands(capsys, run, tmp_path):
    code, out, err = call(capsys, "report", run, "--method", "pca", "--n", "50")
    assert code == 0, err
    assert out.strip() == str(run / "report.html")
    page = tmp_path / "c.html"
    code, out, err = call(capsys, "compare", run, run, "--method", "pca", "--out", page)
    assert code == 0 and page.is_file(), err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["interpolate", "{run}", "--a", "0", "--b", "999"], "--b 999 is outside the test set"),
        (["interpolate", "{run}", "--digits", "3", "9"], "no test image has label 9"),
        (["interpolate", "{run}", "--a", "0"], "interpolate needs two test images"),
        (["interpolate", "{run}", "--a", "0", "--b", "1", "--mode", "cubic"], "'cubic'"),
        (["embed", "{run}", "--method", "umap"], "unknown embedding method 'umap'"),
        (["embed", "{run}", "--epochs", "1"], "epoch 1 is not cached"),
        (["bubbles", "{run}", "--epochs", "7"], "epoch 7 is not cached"),
        (["reconstruct", "{run}", "--epochs", "x"], "expected comma-separated integers"),
        (["sample", "{missing}"], "no such run directory"),
        (["report", "{missing}"], "no such run directory"),
        (["compare", "{run}", "{missing}"], "no such run directory"),
        (["sample", "{run}", "--out", "{blocked}"], "cannot write figures to"),
        (["report", "{run}", "--out", "{blocked}/r.html"], "pass a writable --out"),
        (["sample", "{run}", "--temperature", "-1"], "--temperature"),
        (["manifold", "{run}", "--grid", "1"], "--grid must be at least 2"),
        (["traverse", "{run}", "--dims", "4"], "--dims 4 is outside 1..3"),
        (["traverse", "{run}", "--dims", "0,1"], "--dims 0 is outside 1..3"),
        (["traverse", "{run}", "--dims", ","], "--dims (none) is outside 1..3"),
        (["traverse", "{run}", "--steps", "1"], "--steps must be at least 2"),
        (["traverse", "{run}", "--range", "0"], "--range must be a positive number"),
        (["traverse", "{run}", "--range", "-2"], "--range must be a positive number"),
        (["traverse", "{run}", "--index", "64"], "--index 64 is outside the test set"),
        (["traverse", "{run}", "--index", "-1"], "--index -1 is outside the test set"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, run, tmp_path, argv, match):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    values = {"run": run, "missing": tmp_path / "nope", "blocked": blocker / "sub"}
    code, _, err = call(capsys, *(a.format(**values) for a in argv))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and match in lines[0], err


def test_train_with_report_and_tensorboard(capsys, tmp_path):
    import numpy as np

    npz = tmp_path / "tiny.npz"
    np.savez(npz, **make_arrays())
    out = tmp_path / "run"
    argv = ["train", "--dataset", npz, "--epochs", "1", "--latent-dim", "2", "--hidden", "8"]
    code, stdout, err = call(capsys, *argv, "--out", out, "--report", "--tensorboard")
    assert code == 0, err
    assert (out / "report.html").is_file() and "report written to" in stdout
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_tensorboard_missing_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    argv = ["train", "--dataset", "unused.npz", "--epochs", "1", "--tensorboard"]
    code, _, err = call(capsys, *argv, "--out", tmp_path / "run")
    assert code == 2
    assert err.strip() == (
        "vaelab: error: --tensorboard needs the optional extra: pip install 'vaelab[tensorboard]'"
    )
