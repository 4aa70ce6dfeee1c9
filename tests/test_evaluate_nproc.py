"""``vaelab evaluate --nproc N``: the importance-sampled NLL shared between real
torch.distributed processes (gloo on CPU) gives the numbers of one process."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_one_line_error, call_cli, run_cli
from vaelab.checksums import read_json
from vaelab.config import TrainConfig
from vaelab.evaluation.evaluate import evaluate_run
from vaelab.lock import RunLock
from vaelab.training.loop import train

# 150 test images: one full group of NOISE_GROUP = 100 for rank 0, half a group for rank 1
QUICK = ["--n-images", "150", "--iw-samples", "20", "--no-sample-scores", "--quiet"]
SAME = ("nll_iwae", "nll_iwae_se", "neg_elbo", "neg_elbo_se", "recon", "kl", "kl_per_dim")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("evalnproc") / "run"
    return train(
        TrainConfig(limit=256, epochs=1), out=root, data=mnist, progress=False, log=lambda _m: None
    )


def one_process(run, batch_size: int) -> dict:
    return evaluate_run(
        run, iw_samples=20, n_images=150, batch_size=batch_size, scores=False, write=False
    )


def test_two_processes_give_the_numbers_of_one_whatever_the_batch(mnist_run):
    done = run_cli("evaluate", str(mnist_run), "--nproc", "2", *QUICK, timeout=240)
    assert done.returncode == 0, done.stderr
    saved, sealed = read_json(mnist_run / "eval.json")
    assert sealed and saved["processes"] == 2 and saved["n_images"] == 150
    single, small_batches = one_process(mnist_run, 100), one_process(mnist_run, 7)
    assert single["processes"] == 1
    for name in SAME:
        assert saved[name] == pytest.approx(single[name], rel=1e-6, abs=0), name
        assert small_batches[name] == pytest.approx(single[name], rel=1e-6, abs=0), name
    # rank 0 alone computes the rest, on every image
    assert saved["active_units"] == single["active_units"]
    assert saved["mutual_information"] == pytest.approx(single["mutual_information"], rel=1e-6)
    # ...and another seed moves the estimate, so the comparison above can fail
    other = evaluate_run(mnist_run, iw_samples=20, n_images=150, scores=False, write=False, seed=1)
    assert other["nll_iwae"] != pytest.approx(single["nll_iwae"], rel=1e-6, abs=0)


def test_a_failing_rank_fails_the_command_and_writes_no_eval_json(mnist_run):
    (mnist_run / "eval.json").unlink(missing_ok=True)
    done = run_cli(
        "evaluate",
        str(mnist_run),
        "--nproc",
        "2",
        *QUICK,
        env={"VAELAB_FAILPOINT_FAIL_RANK": "1"},
        timeout=240,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "rank 1 of 2 exited with code 2" in last, done.stderr
    assert "failed on purpose" in done.stderr and "Traceback" not in done.stderr
    assert not (mnist_run / "eval.json").exists()


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_nproc_is_refused(capsys, finished_cli_run, value):
    code, _, err = call_cli(capsys, "evaluate", str(finished_cli_run), "--nproc", value)
    assert_one_line_error(code, err, match="--nproc")
    assert not (finished_cli_run / "eval.json").exists()


def test_bad_arguments_are_refused_before_any_process_starts(capsys, finished_cli_run, monkeypatch):
    code, _, err = call_cli(
        capsys, "evaluate", str(finished_cli_run), "--nproc", "2", "--split", "valid"
    )
    assert_one_line_error(code, err, match="split")
    code, _, err = call_cli(capsys, "evaluate", str(finished_cli_run / "nothing"), "--nproc", "2")
    assert_one_line_error(code, err)
    with RunLock(finished_cli_run):  # a run another process is writing
        code, _, err = call_cli(capsys, "evaluate", str(finished_cli_run), "--nproc", "2")
    assert_one_line_error(code, err, match="being written by another process")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a GPU for one rank of two
    code, _, err = call_cli(
        capsys, "evaluate", str(finished_cli_run), "--nproc", "2", "--device", "cuda"
    )
    assert_one_line_error(code, err, match="2 processes on this machine needs 2 GPUs")
