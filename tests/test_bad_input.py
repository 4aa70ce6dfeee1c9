"""The bad-input corpus: each case is one line on stderr naming the problem, exit code 2,
no traceback, and nothing of an existing run changes. (More cases: tests/test_cli.py.)"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, call_cli, make_arrays, snapshot
from test_data import write_idx_folder
from vaelab import cli
from vaelab.data import sources as S


def call(capsys, *argv: str) -> tuple[int, str]:
    code, _, err = call_cli(capsys, *argv)
    return code, err


def assert_usage_error(code: int, err: str, match: str) -> None:
    assert_one_line_error(code, err, 2, match)


# --------------------------------------------------------------- broken data files
def idx_folder(tmp: Path, mutate) -> Path:
    folder = tmp / "idx"
    arrays = make_arrays()
    mutate_arrays = getattr(mutate, "arrays", None)
    if mutate_arrays:
        mutate_arrays(arrays)
    write_idx_folder(folder, arrays, gz=True)
    if callable(mutate):
        mutate(folder)
    return folder


def _gz(folder: Path, key: str) -> Path:
    return folder / f"{S.IDX_NAMES[key]}.gz"


def truncate_gz(folder):
    p = _gz(folder, "x_train")
    p.write_bytes(p.read_bytes()[:100])


def garbage_gz(folder):
    _gz(folder, "x_test").write_bytes(b"\x1f\x8b" + bytes(range(200)))


def wrong_magic(folder):
    p = _gz(folder, "y_train")
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[0:2] = b"\x08\x03"
    p.write_bytes(gzip.compress(bytes(raw)))


def header_lies(folder):
    p = _gz(folder, "x_test")
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[7] += 1  # one more image promised than stored
    p.write_bytes(gzip.compress(bytes(raw)))


def missing_labels(folder):
    _gz(folder, "y_test").unlink()


def fewer_labels(folder):
    p = _gz(folder, "y_train")
    p.write_bytes(gzip.compress(S.encode_idx(np.zeros(10, np.uint8))))


def other_test_shape(folder):
    _gz(folder, "x_test").write_bytes(gzip.compress(S.encode_idx(np.zeros((64, 9, 9), np.uint8))))


IDX_CASES = [
    (truncate_gz, "gzip"),
    (garbage_gz, "gzip"),
    (wrong_magic, "bad magic"),
    (header_lies, "truncated or corrupt"),
    (missing_labels, "missing IDX"),
    (fewer_labels, "counts must match"),
    (other_test_shape, "differ in shape"),
]


@pytest.mark.parametrize("mutate,match", IDX_CASES, ids=[m.__name__ for m, _ in IDX_CASES])
def test_broken_idx_folder(capsys, tmp_path, mutate, match):
    folder = idx_folder(tmp_path, mutate)
    code, err = call(capsys, "train", "--dataset", str(folder), "--out", str(tmp_path / "r"))
    assert_usage_error(code, err, match)
    assert not (tmp_path / "r").exists()


def npz_case(**arrays):
    return arrays


NPZ_CASES = {
    "pixels-above-one": (
        npz_case(x_train=np.full((8, 4), 2.0), x_test=np.full((2, 4), 0.5)),
        "--recon mse",
    ),
    "negative-pixels": (
        npz_case(x_train=np.full((8, 4), -0.5), x_test=np.full((2, 4), 0.5)),
        "--recon mse",
    ),
    "nan": (npz_case(x_train=np.array([[np.nan, 0.5]] * 4), x_test=np.zeros((2, 2))), "NaN"),
    "inf": (npz_case(x_train=np.array([[np.inf, 0.5]] * 4), x_test=np.zeros((2, 2))), "NaN"),
    "empty-train": (npz_case(x_train=np.zeros((0, 4)), x_test=np.zeros((2, 4))), "empty"),
    "empty-test": (npz_case(x_train=np.zeros((4, 4)), x_test=np.zeros((0, 4))), "empty"),
    "no-x-test": (npz_case(x_train=np.zeros((4, 4))), "no x_test"),
    "string-pixels": (
        npz_case(x_train=np.array([["a", "b"]] * 4), x_test=np.zeros((2, 2))),
        "expected numbers",
    ),
    "2d-labels": (
        npz_case(
            x_train=np.zeros((4, 4)), y_train=np.zeros((4, 2), np.int64), x_test=np.zeros((2, 4))
        ),
        "counts must match",
    ),
    "float-labels": (
        npz_case(x_train=np.zeros((4, 4)), y_train=np.zeros(4), x_test=np.zeros((2, 4))),
        "integers",
    ),
    "scalar-images": (npz_case(x_train=np.zeros(4), x_test=np.zeros(2)), "shape (N, ...)"),
}


@pytest.mark.parametrize("name", list(NPZ_CASES))
def test_bad_npz(capsys, tmp_path, name):
    arrays, match = NPZ_CASES[name]
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    code, err = call(capsys, "train", "--dataset", str(path), "--out", str(tmp_path / "r"))
    assert_usage_error(code, err, match)
    assert not (tmp_path / "r").exists()


def test_object_npz_is_refused_without_unpickling(capsys, tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), x_test=np.zeros((1, 2)))
    code, err = call(capsys, "train", "--dataset", str(path), "--out", str(tmp_path / "r"))
    assert_usage_error(code, err, "not a readable .npz")


def test_text_file_as_dataset(capsys, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    code, err = call(capsys, "train", "--dataset", str(path), "--out", str(tmp_path / "r"))
    assert_usage_error(code, err, "unknown dataset")


# ------------------------------------------------------------------ bad checkpoints
@pytest.fixture
def run(finished_cli_run: Path) -> Path:
    return finished_cli_run


def test_checkpoint_of_another_architecture(capsys, run, tmp_path, tiny_npz):
    other = tmp_path / "other"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                str(tiny_npz),
                "--epochs",
                "1",
                "--latent-dim",
                "3",
                "--hidden",
                "9",
                "--out",
                str(other),
                "--quiet",
            ]
        )
        == 0
    )
    (run / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    before = snapshot(run)
    code, err = call(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert_usage_error(code, err, "another architecture")
    assert snapshot(run) == before
    from vaelab import VaelabError, load_run

    with pytest.raises(VaelabError, match="does not fit"):
        load_run(run)


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_a_code_payload_is_refused_unrun(capsys, run, tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save(
        {"format": "vaelab-checkpoint-1", "epoch": 1, "model": Payload(str(marker))},
        run / "checkpoints" / "last.pt",
    )
    before = snapshot(run)
    code, err = call(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert_usage_error(code, err, "refused to load")
    assert not marker.exists() and snapshot(run) == before


def test_plain_pickle_as_checkpoint(capsys, run, tmp_path):
    marker = tmp_path / "payload-ran"
    (run / "checkpoints" / "last.pt").write_bytes(pickle.dumps(Payload(str(marker))))
    code, err = call(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not marker.exists()


def test_garbage_config_json(capsys, run):
    (run / "config.json").write_text("{not json")
    code, err = call(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert_usage_error(code, err, "not a vaelab run config")


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--keep-every", "0"),
        ("--grad-clip", "-1"),
        ("--grad-clip", "nan"),
        ("--beta", "lots"),
        ("--binarize", "sometimes"),
        ("--seed", "1.5"),
    ],
)
def test_more_bad_flags(capsys, tmp_path, flag, value):
    code, err = call(capsys, "train", flag, value, "--out", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert flag in err or "invalid" in err
