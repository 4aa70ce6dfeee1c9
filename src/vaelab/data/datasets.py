"""What the trainer gets: datasets held in memory as tensors, checked and binarised.

``load_dataset`` takes a known dataset's name (MNIST, Fashion-MNIST; where their bytes
come from, and how they are checked, is ``vaelab.data.sources``), an IDX folder or an .npz
file. Images become float32 in [0, 1] as uint8 / 255 (torchvision's ToTensor, as in the
lecture).
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.data.sources import (
    IDX_NAMES,
    KNOWN,
    dataset_sha256,
    known_idx_files,
    parse_idx,
    read_idx_folder,
    sha256_hex,
)
from vaelab.errors import SettingError, VaelabError


@dataclass
class Dataset:
    """Train and test splits in memory, and a validation split held out of the training
    images (``held_out``; None without one). ``x_*``: float32 (N, *input_shape); ``y_*``:
    int64 (N,) with -1 where there is no label."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    sha256: str
    source: str
    classes: tuple[str, ...] = ()
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def held_out(self, n: int | None) -> Dataset:
        """The last ``n`` training images as the validation split, the rest for training
        (MNIST: n = 10,000 is the canonical 50,000 / 10,000 split). The test set is never
        touched: model selection must not see it.

        Examples:
            >>> images = np.zeros((5, 2, 2), dtype=np.uint8)
            >>> ds = arrays_to_dataset({"x_train": images, "x_test": images[:1]}, "toy", "", "")
            >>> split = ds.held_out(2)
            >>> len(split.x_train), len(split.x_val), len(split.x_test)
            (3, 2, 1)
        """
        if n is None:
            return self
        if n >= len(self.x_train):
            raise SettingError(
                "{val_size} {n} leaves no training images: {name} has {total}; hold out fewer",
                n=n,
                total=len(self.x_train),
                name=self.name,
            )
        keep = len(self.x_train) - n
        return dataclasses.replace(
            self,
            x_train=self.x_train[:keep],
            y_train=self.y_train[:keep],
            x_val=self.x_train[keep:],
            y_val=self.y_train[keep:],
        )

    def limited(self, n: int | None) -> Dataset:
        """The first ``n`` training images (the test set is unchanged)."""
        if n is None:
            return self
        if n > len(self.x_train):
            held = "" if self.x_val is None else f" left after {{val_size}} {len(self.x_val)}"
            raise SettingError(
                "{limit} {n} is larger than the {total} training images" + held + " of "
                "{name}; use a smaller {limit} or leave it out",
                n=n,
                total=len(self.x_train),
                name=self.name,
            )
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])

    def describe(self) -> dict:
        described = {
            "name": self.name,
            "sha256": self.sha256,
            "source": self.source,
            "n_train": len(self.x_train),
            "n_test": len(self.x_test),
            "input_shape": list(self.input_shape),
        }
        if self.x_val is not None:
            described["n_val"] = len(self.x_val)
        return described


# ----------------------------------------------------------------------- to tensors
def _images_to_tensor(x: np.ndarray, name: str) -> Tensor:
    """uint8 images -> float32 / 255; floats kept. (N,H,W) -> (N,1,H,W); NHWC -> NCHW."""
    if x.ndim < 2:
        raise VaelabError(f"{name}: expected an array of shape (N, ...), got shape {x.shape}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:  # finite by construction: no check (0.5 s on MNIST's 70,000)
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if not np.issubdtype(x.dtype, np.number):
        raise VaelabError(f"{name}: expected numbers, got dtype {x.dtype}")
    out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not torch.isfinite(out).all():
        raise VaelabError(f"{name}: contains NaN or infinite values; clean the data first")
    return out


def _labels_to_tensor(y: np.ndarray | None, n: int, name: str) -> Tensor:
    if y is None:
        return torch.full((n,), -1, dtype=torch.long)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise VaelabError(
            f"{name}: {len(y) if y.ndim else 0} labels for {n} images; counts must match"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise VaelabError(f"{name}: labels must be integers, got dtype {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))


def arrays_to_dataset(
    arrays: dict[str, np.ndarray | None],
    name: str,
    sha256: str,
    source: str,
    classes: tuple[str, ...] = (),
) -> Dataset:
    """A checked ``Dataset`` from x_train, x_test (and optionally y_train, y_test) arrays.

    Examples:
        >>> images = np.full((3, 2, 2), 255, dtype=np.uint8)  # (N, H, W), no labels
        >>> ds = arrays_to_dataset({"x_train": images, "x_test": images[:1]}, "toy", "0" * 64, "")
        >>> ds.input_shape, ds.x_train.dtype, ds.x_train.max().item(), ds.y_train.tolist()
        ((1, 2, 2), torch.float32, 1.0, [-1, -1, -1])
    """
    tensors = {}
    for split in ("train", "test"):
        x = arrays.get(f"x_{split}")
        if x is None:
            raise VaelabError(f"{name}: no x_{split} array")
        xt = _images_to_tensor(np.asarray(x), f"{name} x_{split}")
        if len(xt) == 0:
            raise VaelabError(f"{name}: the {split} split is empty")
        tensors[f"x_{split}"] = xt
        tensors[f"y_{split}"] = _labels_to_tensor(
            arrays.get(f"y_{split}"), len(xt), f"{name} y_{split}"
        )
    if tensors["x_train"].shape[1:] != tensors["x_test"].shape[1:]:
        raise VaelabError(
            f"{name}: train images {tuple(tensors['x_train'].shape[1:])} and test images "
            f"{tuple(tensors['x_test'].shape[1:])} differ in shape"
        )
    return Dataset(
        name,
        tensors["x_train"],
        tensors["y_train"],
        tensors["x_test"],
        tensors["y_test"],
        sha256,
        source,
        classes,
    )


def _idx_to_dataset(
    files: dict[str, bytes], name: str, source: str, classes: tuple[str, ...] = ()
) -> Dataset:
    arrays = {key: parse_idx(raw, f"{source}/{IDX_NAMES[key]}") for key, raw in files.items()}
    digest = dataset_sha256([sha256_hex(files[k]) for k in IDX_NAMES])
    return arrays_to_dataset(arrays, name, digest, source, classes)


def load_npz(path: Path) -> Dataset:
    """An .npz with x_train, x_test (and optionally y_train, y_test); never unpickles."""
    raw = path.read_bytes()
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in npz}
    except (ValueError, OSError, zlib.error, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise VaelabError(f"{path}: not a readable .npz file ({exc})") from None
    return arrays_to_dataset(arrays, path.stem, sha256_hex(raw), str(path))


def load_dataset(
    name: str = "mnist",
    data_dir: str | None = None,
    limit: int | None = None,
    download: bool = True,
) -> Dataset:
    """Load a known dataset by name, or a path to an IDX folder or an .npz file."""
    if name in KNOWN:
        spec = KNOWN[name]
        files, source = known_idx_files(spec, data_dir, download)
        return _idx_to_dataset(files, name, source, spec.classes).limited(limit)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path).limited(limit)
    if path.is_dir():
        return _idx_to_dataset(read_idx_folder(path), path.name, str(path)).limited(limit)
    raise VaelabError(
        f"unknown dataset {name!r}: use one of {', '.join(KNOWN)}, a folder with the four "
        "IDX files, or an .npz with x_train, y_train, x_test, y_test"
    )


TEST_BINARIZATION_SEED = 0  # fixed, so every run is scored on the same binary test set


def binarize_fixed(x: Tensor) -> Tensor:
    """Bernoulli(x) drawn with ``TEST_BINARIZATION_SEED``: the same binary images on every
    call, so every run is scored on the same binary data.

    Examples:
        >>> x = torch.tensor([0.0, 0.5, 1.0])
        >>> b = binarize_fixed(x)
        >>> b[0].item(), b[2].item(), torch.equal(b, binarize_fixed(x))
        (0.0, 1.0, True)
    """
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(TEST_BINARIZATION_SEED))


def binarize_dataset(data: Dataset, mode: str, seed: int) -> Dataset:
    """Binary images drawn as Bernoulli(pixel), the benchmark of Burda et al. 2015.

    ``none`` returns ``data``; ``dynamic`` binarises the test set once (fixed seed) and
    leaves the training set grey, for the trainer to re-sample each batch; ``static``
    also binarises the training set once (with ``seed``)."""
    if mode == "none":
        return data
    check_unit_range(data)
    x_train = data.x_train
    if mode == "static":
        x_train = torch.bernoulli(x_train, generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(  # the validation split, like the test set: fixed images
        data,
        x_train=x_train,
        x_test=binarize_fixed(data.x_test),
        x_val=None if data.x_val is None else binarize_fixed(data.x_val),
        source=f"{data.source}, binarized {mode}",
    )


def prepare_data(
    config: TrainConfig,
    data: Dataset | None = None,
    recorded_sha256: str | None = None,
    binarize: str | None = None,
) -> Dataset:
    """The data a run trains and is scored on, the one way it is made: ``data`` (the
    whole dataset; loaded from ``config.dataset`` and ``config.data_dir`` when None), its
    validation split (``config.val_size``, held out first) and the first ``config.limit``
    of the other training images, checked against the checksum the run recorded
    (``recorded_sha256``, when resuming or reading a run), binarised as the run says (or as
    ``binarize`` overrides) and checked to suit the likelihood's range."""
    data = data if data is not None else load_dataset(config.dataset, config.data_dir)
    if recorded_sha256 and recorded_sha256 != data.sha256:
        raise SettingError(
            "the data {value!r} differs from what the run was trained on (checksum differs); "
            "pass the run's data ({data_dir}) or train a new run",
            value=config.dataset,
        )
    data = data.held_out(config.val_size).limited(config.limit)
    data = binarize_dataset(data, binarize or config.binarize, config.seed)
    if config.needs_unit_range:
        check_unit_range(data)
    return data


def label_classes(data: Dataset) -> int:
    """K, the number of classes a model conditioned on ``data``'s labels takes (``vaelab
    train --condition label``): the dataset's class names, or the largest label + 1. Every
    training and test image needs a label in 0..K-1.

    Examples:
        >>> images = np.zeros((3, 2, 2), dtype=np.uint8)
        >>> arrays = {"x_train": images, "y_train": np.array([0, 2, 1]), "x_test": images[:1]}
        >>> label_classes(arrays_to_dataset({**arrays, "y_test": np.array([2])}, "toy", "", ""))
        3
        >>> label_classes(arrays_to_dataset(arrays, "toy", "", ""))
        Traceback (most recent call last):
        ...
        vaelab.errors.VaelabError: --condition label needs a label for every image, but toy has no test labels
    """
    for split, y in (("training", data.y_train), ("test", data.y_test)):
        missing = int((y < 0).sum())
        if missing == len(y):
            raise VaelabError(
                f"--condition label needs a label for every image, but {data.name} has no "
                f"{split} labels"
            )
        if missing:
            raise VaelabError(
                f"--condition label needs a label for every image, but {missing} of the "
                f"{len(y)} {split} images of {data.name} have none"
            )
    largest = int(max(data.y_train.max(), data.y_test.max()))
    if data.classes and largest >= len(data.classes):
        raise VaelabError(
            f"{data.name}: label {largest} is outside its {len(data.classes)} classes"
        )
    return len(data.classes) or largest + 1


def check_unit_range(data: Dataset) -> None:
    """Bernoulli likelihoods need pixels in [0, 1]; say so instead of training into NaN."""
    splits = [("train", data.x_train), ("test", data.x_test), ("validation", data.x_val)]
    for split, x in [(name, x) for name, x in splits if x is not None]:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise SettingError(
                "{name}: {split} values span [{lo:g}, {hi:g}] but Bernoulli-type likelihoods "
                "({recon} bce, continuous-bernoulli, {binarize}) need values in [0, 1]; "
                "rescale the data or use {recon} mse",
                name=data.name,
                split=split,
                lo=lo,
                hi=hi,
            )
