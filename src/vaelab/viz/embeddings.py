"""2-D embeddings of the cached test means: t-SNE (openTSNE, or scikit-learn's) or PCA,
and the cache of them in the run directory. Compute only, like :mod:`vaelab.viz.analysis`.

Embedding cache (read by other tools, e.g. the latent-space explorer; keep it stable)::

    RUN/embeddings/epoch-NNN-<method>.npz      method: tsne | pca
        xy       float32 (n, 2)  the 2-D embedding of the cached test means mu
        labels   int64   (n,)    the test labels of those points (-1 where unlabelled)
        indices  int64   (n,)    their indices in the test set (currently 0..n-1)

It is written by :func:`cached_embedding` from ``RUN/latents/epoch-NNN.npz`` and
recomputed when the requested points differ from the cached ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vaelab.errors import SettingError, VaelabError
from vaelab.run import RunPaths, read_npz

EMBED_METHODS = ("tsne", "pca")
TSNE_SEED = 0
TSNE_PERPLEXITY = 30.0


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``x`` (n, d) -> (n, 2), signs fixed so
    that the largest loading of each component is positive (deterministic)."""
    return pca_2d_explained(x)[0]


def pca_2d_explained(x: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`pca_2d` of ``x`` and the fraction of its variance the two axes explain
    (1.0 when ``x`` has no variance at all).

    Examples:
        >>> xy, explained = pca_2d_explained(np.array([[0.0, 0, 0], [2, 0, 0], [0, 1, 0]]))
        >>> xy.shape, round(explained, 6)  # three points always lie in a plane
        ((3, 2), 1.0)
    """
    x = np.asarray(x, np.float64)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    xy = centred @ (vt * signs[:, None]).T
    if xy.shape[1] < 2:  # a 1-D latent: pad with zeros
        xy = np.hstack([xy, np.zeros((len(xy), 2 - xy.shape[1]))])
    var = s**2
    explained = float(var[:2].sum() / var.sum()) if var.sum() > 0 else 1.0
    return xy.astype(np.float32), explained


def tsne_2d(x: np.ndarray, seed: int = TSNE_SEED) -> np.ndarray:
    """t-SNE (van der Maaten & Hinton 2008) of ``x`` (n, d) -> (n, 2) with openTSNE
    (Policar et al. 2024): as good as scikit-learn's by trustworthiness and faster here
    (docs/benchmarks.md). PCA initialisation, perplexity 30, a fixed seed, one thread:
    on a shared 2-core machine extra threads wait on each other at every iteration."""
    x = np.asarray(x, np.float64)
    perplexity = min(TSNE_PERPLEXITY, max(2.0, (len(x) - 1) / 3))
    try:
        from openTSNE import TSNE
    except ImportError:  # scikit-learn is always there; openTSNE is only faster
        from sklearn.manifold import TSNE as SkTSNE
        from threadpoolctl import threadpool_limits

        sk = SkTSNE(2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
        with threadpool_limits(1):
            return sk.fit_transform(x).astype(np.float32)
    tsne = TSNE(perplexity=perplexity, initialization="pca", random_state=seed, n_jobs=1)
    return np.asarray(tsne.fit(x), dtype=np.float32)


def embed_2d(x: np.ndarray, method: str = "tsne") -> np.ndarray:
    """A 2-D embedding of ``x`` (n, d) by ``method`` (tsne | pca)."""
    if method not in EMBED_METHODS:
        raise VaelabError(
            f"unknown embedding method {method!r}; choose one of {', '.join(EMBED_METHODS)}"
        )
    if len(x) < 5:
        raise VaelabError(f"an embedding needs at least 5 points, got {len(x)}; raise --n")
    return tsne_2d(x) if method == "tsne" else pca_2d(x)


def embedding_file(root: Path, epoch: int, method: str) -> Path:
    return RunPaths(root).embedding_file(epoch, method)


def read_embedding(path: Path, n_test: int | None = None) -> dict[str, np.ndarray] | None:
    """A cached embedding (format in the module docstring) as ``xy`` float32 (n, 2),
    ``labels`` and ``indices`` int64 (n,); None when the file is missing or damaged: not
    an npz, a key missing, shapes that disagree, no points, a non-finite coordinate, or an
    index outside 0..``n_test`` - 1 (when ``n_test`` is given)."""
    try:
        npz = read_npz(path)  # its checksum checked: a damaged cache is computed again
        xy = np.asarray(npz["xy"], dtype=np.float32)
        labels = np.asarray(npz["labels"]).astype(np.int64)
        indices = np.asarray(npz["indices"]).astype(np.int64)
    except (OSError, KeyError, ValueError, TypeError, EOFError, VaelabError):
        return None
    n = len(xy) if xy.ndim else 0
    sound = (
        xy.ndim == 2
        and xy.shape[1] == 2
        and n > 0
        and labels.shape == indices.shape == (n,)
        and bool(np.isfinite(xy).all())
        and int(indices.min()) >= 0
        and (n_test is None or int(indices.max()) < n_test)
    )
    return {"xy": xy, "labels": labels, "indices": indices} if sound else None


def cached_embedding(
    root: Path, epoch: int, latents: dict[str, np.ndarray], method: str = "tsne", n: int = 1000
) -> dict[str, np.ndarray]:
    """The 2-D embedding of the first ``n`` cached test means at ``epoch``: read from
    RUN/embeddings/ when it holds exactly those points, otherwise computed and written
    there (format in the module docstring). An unwritable run only skips the cache (with a
    note on stderr)."""
    total = len(latents["mu"])
    if n <= 0:
        raise SettingError("{n} must be a positive integer, got {value}", value=n)
    if n > total:
        raise SettingError(
            "{n} {value} is more than the {total} cached test points; use {n} {total}",
            value=n,
            total=total,
        )
    indices = np.arange(n, dtype=np.int64)
    path = embedding_file(root, epoch, method)
    cached = read_embedding(path)  # None when missing or damaged: recomputed
    if cached is not None and np.array_equal(cached["indices"], indices):
        return cached
    out = {
        "xy": embed_2d(latents["mu"][:n], method),
        "labels": np.asarray(latents["labels"][:n], dtype=np.int64),
        "indices": indices,
    }
    try:
        from vaelab.fileio import atomic_write_zip

        atomic_write_zip(path, lambda f: np.savez(f, **out))
    except OSError as exc:  # the embedding is still returned; only the next call pays again
        print(f"vaelab: note: could not cache the embedding in {path}: {exc}", file=sys.stderr)
    return out
