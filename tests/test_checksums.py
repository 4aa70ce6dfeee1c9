"""Every file of a run carries its SHA-256 and every read checks it: a byte flipped in
any kind of artefact is detected and named, by the reader, by --resume and by verify."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, call_cli, snapshot, train_tiny_run
from vaelab.checksums import check_json, check_zip, read_json, seal_json, seal_zip, sealed_line
from vaelab.errors import DamagedFileError
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.checkpoint import load_checkpoint
from vaelab.viz.embeddings import read_embedding

QUIET = {"progress": False, "log": lambda _m: None}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run with every kind of artefact: last.pt, a cached epoch's weights,
    --keep-every copies, latents, metrics, config.json, eval.json and an embedding."""
    from vaelab.evaluation.evaluate import evaluate_run
    from vaelab.viz.embeddings import cached_embedding

    root = train_tiny_run(
        tmp_path_factory.mktemp("sealed"), epochs=4, keep_every=2, embed_epochs=[0, 3]
    )
    run = load_run(root)
    evaluate_run(run, iw_samples=2, scores=False, n_images=16, log=lambda _m: None)
    cached_embedding(root, 3, run.latents(3), "pca", n=32)
    return root


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def flip(path: Path, at: int | None = None) -> None:
    """Flip one bit of one byte (by default in the middle of the file)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def middle_of_line(path: Path, number: int) -> int:
    lines = path.read_bytes().split(b"\n")
    return sum(len(line) + 1 for line in lines[: number - 1]) + len(lines[number - 1]) // 2


# Each kind of artefact, the file, and how vaelab reads it.
KINDS = {
    "last checkpoint": ("checkpoints/last.pt", lambda root: load_run(root)),
    "cached weights": ("checkpoints/epoch-000.pt", lambda root: load_run(root).model_at(0)),
    "keep-every copy": ("checkpoints/epoch-002.pt", lambda root: load_checkpoint(
        RunPaths(root).epoch_checkpoint(2))),
    "latents": ("latents/epoch-003.npz", lambda root: load_run(root).latents(3)),
    "config": ("config.json", lambda root: load_run(root)),
    "metrics line": ("metrics.jsonl", lambda root: load_run(root)),
    "eval.json": ("eval.json", lambda root: read_json(RunPaths(root).eval)),
}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_is_detected_and_named_by_the_reader_and_verify(capsys, run, kind):
    name, read = KINDS[kind]
    path = run / name
    flip(path, middle_of_line(path, 3) if kind == "metrics line" else None)
    with pytest.raises(DamagedFileError, match="damaged") as info:
        read(run)
    assert str(info.value).startswith(str(path)), info.value
    if kind == "metrics line":
        assert "line 3" in str(info.value)
    code, out, _ = call_cli(capsys, "verify", run)
    assert code == 2
    statuses = verified(out, run)
    assert statuses.pop(name).startswith("damaged"), out
    assert all(status.startswith("intact") for status in statuses.values()), out


def verified(out: str, run: Path) -> dict[str, str]:
    """vaelab verify's lines, file -> status, without the summary and advice after them."""
    lines = [line for line in out.splitlines() if not line.startswith((str(run), "to continue"))]
    return dict(line.split(": ", 1) for line in lines)


def test_a_damaged_embedding_cache_is_computed_again(run):
    path = run / "embeddings" / "epoch-003-pca.npz"
    assert read_embedding(path) is not None
    flip(path)
    assert read_embedding(path) is None  # a cache: computed again, not trusted


def test_a_sealed_run_verifies_intact(capsys, finished):
    code, out, err = call_cli(capsys, "verify", finished)
    assert code == 0 and err == "", err
    assert list(verified(out, finished)) == [
        "config.json",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/epoch-000.pt",
        "checkpoints/epoch-002.pt",
        "checkpoints/epoch-003.pt",
        "checkpoints/epoch-004.pt",
        "latents/epoch-000.npz",
        "latents/epoch-003.npz",
        "embeddings/epoch-003-pca.npz",
        "eval.json",
    ]
    assert out.splitlines()[-1].endswith("all 11 files intact")


def test_missing_files_are_reported(capsys, run):
    (run / "latents" / "epoch-003.npz").unlink()
    (run / "checkpoints" / "epoch-002.pt").unlink()
    code, out, _ = call_cli(capsys, "verify", run)
    assert code == 2
    assert "latents/epoch-003.npz: missing" in out
    assert "checkpoints/epoch-002.pt: missing (the resumable --keep-every copy)" in out


def test_resume_from_a_damaged_last_checkpoint_names_the_newest_intact_one(
    capsys, run, tmp_path, tiny_npz
):
    """--resume refuses a damaged last.pt, names the newest --keep-every copy and, told
    so, continues from it exactly: the weights of an uninterrupted run, bit for bit."""
    flip(run / "checkpoints" / "last.pt")
    before = snapshot(run)
    code, _, err = call_cli(capsys, "train", "--resume", run, "--epochs", "6", "--quiet")
    assert_one_line_error(code, err, match="checkpoints/last.pt: damaged")
    assert f"vaelab train --resume {run} --from-epoch 4" in err
    assert snapshot(run) == before  # nothing changed
    code, _, err = call_cli(
        capsys, "train", "--resume", run, "--epochs", "6", "--from-epoch", "4", "--quiet"
    )
    assert code == 0, err
    settings = dict(epochs=6, keep_every=2, embed_epochs=[0, 3])
    full = train_tiny_run(tmp_path / "full", **settings)
    a, b = load_run(full).model.state_dict(), load_run(run).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in read_metrics(RunPaths(run).metrics)] == list(range(7))


def test_resume_from_cached_weights_only_says_it_is_not_exact(capsys, run):
    """A cached epoch's checkpoint holds weights only: --from-epoch continues from them
    with a fresh optimiser state, and says that it cannot be bit for bit."""
    for keep in ("epoch-002.pt", "epoch-004.pt", "last.pt"):
        flip(run / "checkpoints" / keep)
    code, _, err = call_cli(capsys, "train", "--resume", run, "--epochs", "5", "--quiet")
    assert_one_line_error(code, err, match="epoch-003.pt (epoch 3) holds weights only")
    code, out, err = call_cli(
        capsys, "train", "--resume", run, "--epochs", "5", "--from-epoch", "3"
    )
    assert code == 0, err
    assert "weights only, so a fresh optimiser state" in out
    assert [r["epoch"] for r in read_metrics(RunPaths(run).metrics)] == list(range(6))


# ------------------------------------------------------------------- old runs
def unseal(root: Path) -> None:
    """Strip every checksum, as a run written before vaelab recorded them."""
    comment = len(b"vaelab-sha256:") + 64 + 1
    for path in [*root.rglob("*.pt"), *root.rglob("*.npz")]:
        head = path.read_bytes()[:-comment]  # the zip, with the comment's length still set
        path.write_bytes(head[:-2] + b"\0\0")
    for path in (root / "config.json", root / "eval.json"):
        obj = json.loads(path.read_text())
        del obj["checksum"]
        path.write_text(json.dumps(obj, indent=2))
    metrics = root / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    for row in rows:
        del row["checksum"]
    metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_an_old_run_without_checksums_loads_with_one_note(capsys, run):
    unseal(run)
    run_ = load_run(run)
    run_.latents(3)
    assert len(run_.metrics) == 5 and "checksum" not in run_.metrics[0]
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "has no checksum" in err, err
    code, out, _ = call_cli(capsys, "verify", run)
    assert code == 2 and "checkpoints/last.pt: no checksum (old run)" in out
    code, _, err = call_cli(capsys, "train", "--resume", run, "--epochs", "5", "--quiet")
    assert code == 0, err
    code, out, _ = call_cli(capsys, "verify", run)  # what it wrote since carries checksums
    assert "checkpoints/last.pt: intact" in out and "metrics.jsonl: intact" in out


# ------------------------------------------------------------------ the formats
def small_zip() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buffer)
    return buffer.getvalue()


def test_sealed_zips_load_with_torch_and_numpy():
    sealed = seal_zip(small_zip())
    assert check_zip(sealed, "x") is True and check_zip(small_zip(), "x") is False
    assert torch.equal(torch.load(io.BytesIO(sealed), weights_only=True)["w"], torch.arange(4.0))
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(3))
    assert np.load(io.BytesIO(seal_zip(buffer.getvalue())))["a"].tolist() == [0, 1, 2]


def test_no_single_bit_flip_makes_a_sealed_zip_pass_or_look_old():
    sealed = seal_zip(small_zip())
    for at in range(len(sealed)):
        for bit in (0x01, 0x80):
            damaged = bytearray(sealed)
            damaged[at] ^= bit
            with pytest.raises(DamagedFileError):
                check_zip(bytes(damaged), "x")


def test_no_single_bit_flip_of_a_metrics_line_goes_unnoticed(tmp_path):
    row = {"epoch": 3, "train_loss": 45.06301116943359, "test_kl": 0.0158, "seconds": None}
    line = sealed_line(row).encode()
    path = tmp_path / "metrics.jsonl"
    for at in range(len(line) - 1):  # the newline itself: a torn line, dropped on resume
        damaged = bytearray(line)
        damaged[at] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            rows = read_metrics(path)
        except DamagedFileError:
            continue
        assert rows == [row], (at, bytes(damaged))  # a flip that reads back the same


def test_json_checksum_covers_the_content_not_the_layout():
    sealed = seal_json({"b": [1, 2.5], "a": "x"})
    assert check_json(json.loads(json.dumps(sealed, indent=4)), "f")[0] == {"b": [1, 2.5], "a": "x"}
    with pytest.raises(DamagedFileError, match="does not match"):
        check_json({**sealed, "a": "y"}, "f")
    renamed = {("chEcksum" if k == "checksum" else k): v for k, v in sealed.items()}
    with pytest.raises(DamagedFileError, match="field is damaged"):
        check_json(renamed, "f")  # not mistaken for an old file without a checksum
