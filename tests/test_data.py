import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_arrays
from vaelab.data import datasets as D
from vaelab.data import sources as S
from vaelab.errors import VaelabError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def write_idx_folder(folder: Path, arrays: dict, gz: bool = True) -> dict[str, str]:
    """Write the four IDX files; return their SHA-256 (of the uncompressed bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for key, stem in S.IDX_NAMES.items():
        raw = S.encode_idx(arrays[key])
        digests[key] = hashlib.sha256(raw).hexdigest()
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return digests


# ------------------------------------------------------------------------ real data
def test_real_mnist_statistics(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28)
    assert mnist.x_test.shape == (10000, 1, 28, 28)
    assert mnist.x_train.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert mnist.x_train.std().item() == pytest.approx(0.3081, abs=5e-5)
    assert torch.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == 1


# ------------------------------------------------------------------- file formats
@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_round_trip(tmp_path, gz):
    arrays = make_arrays()
    write_idx_folder(tmp_path, arrays, gz=gz)
    ds = D.load_dataset(str(tmp_path))
    assert ds.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(
        (ds.x_train[:, 0] * 255).round().numpy().astype(np.uint8), arrays["x_train"]
    )
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["y_test"])


def test_npz_round_trip_and_flat_features(tmp_path, tiny_npz):
    ds = D.load_dataset(str(tiny_npz), limit=100)
    assert len(ds.x_train) == 100 and ds.input_shape == (1, 8, 8)
    flat = tmp_path / "flat.npz"
    np.savez(
        flat,
        x_train=np.random.rand(30, 5).astype(np.float32),
        x_test=np.random.rand(10, 5).astype(np.float32),
    )
    ds = D.load_dataset(str(flat))
    assert ds.input_shape == (5,) and (ds.y_train == -1).all()


def test_npz_channel_last_images_become_channel_first(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(
        path, x_train=np.zeros((6, 12, 10, 3), np.uint8), x_test=np.zeros((2, 12, 10, 3), np.uint8)
    )
    assert D.load_dataset(str(path)).input_shape == (3, 12, 10)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x_train=np.array([object()], dtype=object), x_test=np.zeros((1, 2)))
    with pytest.raises(VaelabError, match="not a readable .npz"):
        D.load_dataset(str(path))


def test_bad_idx_magic(tmp_path):
    write_idx_folder(tmp_path, make_arrays(), gz=False)
    (tmp_path / S.IDX_NAMES["x_train"]).write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 100)
    with pytest.raises(VaelabError, match="bad magic"):
        D.load_dataset(str(tmp_path))


def test_truncated_idx(tmp_path):
    write_idx_folder(tmp_path, make_arrays(), gz=False)
    path = tmp_path / S.IDX_NAMES["x_test"]
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(VaelabError, match="truncated"):
        D.load_dataset(str(tmp_path))


def test_truncated_gzip(tmp_path):
    write_idx_folder(tmp_path, make_arrays(), gz=True)
    path = tmp_path / (S.IDX_NAMES["x_train"] + ".gz")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(VaelabError, match="gzip"):
        D.load_dataset(str(tmp_path))


def test_mismatched_image_and_label_counts(tmp_path):
    arrays = make_arrays()
    arrays["y_train"] = arrays["y_train"][:-3]
    write_idx_folder(tmp_path, arrays)
    with pytest.raises(VaelabError, match="counts must match"):
        D.load_dataset(str(tmp_path))


def test_missing_files_named(tmp_path):
    with pytest.raises(VaelabError, match="unknown dataset"):
        D.load_dataset(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaelabError, match="missing IDX"):
        D.load_dataset(str(tmp_path / "empty"))


def test_nan_and_empty_and_range(tmp_path):
    nan = tmp_path / "nan.npz"
    np.savez(nan, x_train=np.array([[0.5, np.nan]]), x_test=np.array([[0.5, 0.5]]))
    with pytest.raises(VaelabError, match="NaN"):
        D.load_dataset(str(nan))
    empty = tmp_path / "empty.npz"
    np.savez(empty, x_train=np.zeros((0, 4)), x_test=np.zeros((2, 4)))
    with pytest.raises(VaelabError, match="empty"):
        D.load_dataset(str(empty))
    wide = tmp_path / "wide.npz"
    np.savez(wide, x_train=np.array([[0.0, 3.0]]), x_test=np.array([[0.5, 0.5]]))
    with pytest.raises(VaelabError, match="use recon mse"):  # the CLI spells it --recon
        D.check_unit_range(D.load_dataset(str(wide)))


def test_limit_larger_than_data(tiny_npz):
    with pytest.raises(VaelabError, match="larger than"):
        D.load_dataset(str(tiny_npz), limit=10**6)


def test_binarize_modes(tiny):
    same = D.binarize_dataset(tiny, "none", 1)
    assert same is tiny
    dyn = D.binarize_dataset(tiny, "dynamic", 1)
    assert set(dyn.x_test.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(dyn.x_train, tiny.x_train)  # re-sampled per batch by the trainer
    assert torch.equal(dyn.x_test, D.binarize_dataset(tiny, "dynamic", 2).x_test)  # fixed seed
    static = D.binarize_dataset(tiny, "static", 1)
    assert set(static.x_train.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(static.x_train, D.binarize_dataset(tiny, "static", 2).x_train)
    # Bernoulli(p) keeps the mean pixel value
    assert static.x_train.mean().item() == pytest.approx(tiny.x_train.mean().item(), abs=0.02)
