"""scikit-learn's TSNE against openTSNE on the cached test means of a run.

    .venv/bin/python benchmarks/tsne.py RUN [--epoch E] [--sizes 1000,10000] [--jobs 1]

For each size: seconds for each library and gradient method (same PCA initialisation,
perplexity 30, seed 0; openTSNE's default is FFT-accelerated interpolation),
and how well each embedding keeps the data's neighbourhoods: trustworthiness (k = 10)
and the fraction of each point's 10 nearest neighbours in the latent space that are
also among its 10 nearest in the embedding, plus the 10-NN label accuracy in 2-D.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from machine import print_machine
from sklearn.manifold import TSNE as SkTSNE
from sklearn.manifold import trustworthiness
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from vaelab.run import load_run


def knn_preserved(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    nx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    ny = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y, return_distance=False)[:, 1:]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny)]))


def knn_label_accuracy(y: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    half = len(y) // 2
    clf = KNeighborsClassifier(k).fit(y[:half], labels[:half])
    return float(clf.score(y[half:], labels[half:]))


def run_sklearn(x: np.ndarray, jobs: int) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(jobs):  # its Barnes-Hut gradient uses OpenMP threads
        return SkTSNE(
            2, perplexity=30, init="pca", learning_rate="auto", random_state=0, n_jobs=jobs
        ).fit_transform(x)


def run_opentsne(x: np.ndarray, jobs: int, method: str) -> np.ndarray:
    from openTSNE import TSNE

    tsne = TSNE(
        perplexity=30,
        initialization="pca",
        random_state=0,
        n_jobs=jobs,
        negative_gradient_method=method,
    )
    return np.asarray(tsne.fit(x))


LIBRARIES = {
    "scikit-learn (Barnes-Hut)": run_sklearn,
    "openTSNE (Barnes-Hut)": lambda x, jobs: run_opentsne(x, jobs, "bh"),
    "openTSNE (FFT)": lambda x, jobs: run_opentsne(x, jobs, "fft"),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--epoch", type=int, default=None)
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--jobs", type=int, default=1, help="threads for each library")
    args = p.parse_args()
    print_machine()
    run = load_run(args.run)
    epoch = args.epoch if args.epoch is not None else run.cached_epochs()[-1]
    lat = run.latents(epoch)
    print(f"run {args.run}, epoch {epoch}, d = {lat['mu'].shape[1]}, n_jobs = {args.jobs}")
    print(
        "| points | library | wall s | CPU s | trustworthiness@10 | 10-NN kept | 10-NN label acc |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in [int(s) for s in args.sizes.split(",")]:
        x = lat["mu"][:n].astype(np.float64)
        labels = lat["labels"][:n]
        for name, fn in LIBRARIES.items():
            t0, c0 = time.perf_counter(), time.process_time()
            y = fn(x, args.jobs)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            tw = trustworthiness(x, y, n_neighbors=10)
            print(
                f"| {n} | {name} | {secs:.1f} | {cpu:.1f} | {tw:.3f} | {knn_preserved(x, y):.3f} | "
                f"{knn_label_accuracy(y, labels):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
