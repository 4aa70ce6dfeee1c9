"""Honest numbers for a trained run: the sampled ELBO, an importance-weighted estimate of
the negative log-likelihood, KL per dimension, active units, and sample quality.

nll_iwae = -log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)),  z_k ~ q(z|x)   (Burda, Grosse &
Salakhutdinov 2015, "Importance Weighted Autoencoders", https://arxiv.org/abs/1509.00519,
eq. 8 and section 5.2). It is an upper bound on -log p(x) that tightens as K grows; K = 1
is the negative ELBO in expectation. The K samples are drawn in chunks (images x samples)
and combined with logsumexp, so memory is bounded for any K and the time is linear in K
and in the number of images.

The bounds, image by image, are ``vaelab.evaluation.bounds``; this module scores a run
with them and writes RUN/eval.json. Started by torchrun (or ``vaelab evaluate --nproc N``),
every process scores a contiguous shard of the images and the per-image terms are gathered,
so the means and standard errors are those of one process; each image's importance
samples depend only on (seed, image index), so the numbers do not depend on the sharding.
Rank 0 alone computes the rest (active units, mutual information, sample scores) and
writes eval.json. Sample quality: N prior samples z ~ p(z) (the run's
own prior: N(0, I), or a learned one), decoded to pixel means and scored by the
dataset's classifier (``vaelab.evaluation.classifier``): mean max-softmax confidence, the fraction
scored >= 0.9, the entropy of the predicted-class histogram, and the Fréchet distance
between classifier features of samples and of test images (Heusel et al. 2017).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab.checksums import seal_json
from vaelab.data.datasets import Dataset, binarize_fixed
from vaelab.errors import RankLostError, SettingError, StorageError, VaelabError
from vaelab.evaluation.bounds import (
    EVAL_MI_POINTS,
    NOISE_GROUP,
    active_units,
    autoencoder_terms,
    iwae_estimate,
    latent_usage,
)
from vaelab.fileio import atomic_write_json
from vaelab.lock import RunLock
from vaelab.models import LatentModel
from vaelab.run import Run, load_run
from vaelab.setting_spec import BINARIZE_CHOICES, check_choice
from vaelab.training.distributed import (
    World,
    destroy_process_group,
    failpoint,
    gather_objects,
    init_process_group,
    is_peer_failure,
    rank_slice,
    world_from_env,
)
from vaelab.training.step import select_device

SPLITS = ("test", "train", "val")  # val: the run's --val-size hold-out
PEER_LOST_GRACE_S = 5.0  # how long a rank whose peer went away waits before it fails


# ----------------------------------------------------------------------- a whole run
def _data_note(binary: bool, likelihood: str, stochastic: bool) -> str:
    """What the numbers mean: a true NLL, or a bound on something that is not one."""
    if not stochastic:
        return (
            "plain autoencoder: no q(z|x) and no KL, so no ELBO and no IWAE estimate; only "
            "the reconstruction loss (z = code) and sample scores are reported"
        )
    if likelihood == "bernoulli" and binary:
        return (
            "true NLL: binary data under a Bernoulli likelihood, so nll_iwae is an upper "
            "bound on -log p(x) in nats, comparable with Burda et al. 2015 (Table 1)"
        )
    if likelihood == "bernoulli":
        return (
            "BCE bound, not an NLL: grey pixels under a Bernoulli likelihood are not a "
            "density of the data; nll_iwae tightens the BCE bound but is not comparable with "
            "published NLLs (use --binarize dynamic for the benchmark)"
        )
    if likelihood in ("continuous-bernoulli", "gaussian"):
        return (
            f"true NLL of a density: the {likelihood} likelihood is normalised on the "
            "pixel values, so nll_iwae bounds -log p(x) in nats; densities of continuous "
            "pixels are not comparable with NLLs of binarised MNIST"
        )
    return (
        "MSE bound, not an NLL: -log p(x|z) is half the squared error, a unit-variance "
        "Gaussian without its 0.5*D*log(2*pi) constant"
    )


def split_labels(data: Dataset, split: str) -> Tensor:
    """The labels of the images ``split_images`` scores."""
    return {"test": data.y_test, "val": data.y_val}.get(split, data.y_train)


def split_images(data: Dataset, split: str, mode: str) -> Tensor:
    """The images scored for ``split``; a dynamically binarised training set is
    binarised once with the fixed test seed so that the score is reproducible
    (``split`` is checked by ``check_arguments``; the validation split, binarised like
    the test set, exists in runs trained with --val-size)."""
    if split == "test":
        return data.x_test
    if split == "val":
        if data.x_val is None:
            raise SettingError(
                "{split} val needs a run trained with --val-size N (it has no validation split)"
            )
        return data.x_val
    return binarize_fixed(data.x_train) if mode == "dynamic" else data.x_train


def check_arguments(
    iw_samples: int, batch_size: int, n_samples: int, binarize: str | None, split: str
) -> None:
    """One SettingError naming the first bad evaluation argument."""
    if not isinstance(iw_samples, int) or iw_samples < 1:
        raise SettingError(
            "{iw_samples} must be a positive integer, got {value!r}", value=iw_samples
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SettingError(
            "{batch_size} must be a positive integer, got {value!r}", value=batch_size
        )
    if not isinstance(n_samples, int) or n_samples < 2:
        raise SettingError("{n_samples} must be an integer >= 2, got {value!r}", value=n_samples)
    if binarize is not None:
        check_choice("binarize", binarize, BINARIZE_CHOICES)
    check_choice("split", split, SPLITS)


def sharded_iwae_terms(
    model: LatentModel,
    x: Tensor,
    k: int,
    batch_size: int,
    seed: int,
    progress: bool = False,
    labels: Tensor | None = None,
    world: World = World(),
) -> dict[str, Tensor]:
    """``iwae_estimate``'s per-image terms of all of ``x``, each rank scoring a contiguous
    shard of it (the ``rank_slice`` of its groups of NOISE_GROUP images, so no group is
    split between ranks) and every rank receiving all of them in image order: the same
    tensors as one process with the same seed."""
    groups = rank_slice(torch.arange(math.ceil(len(x) / NOISE_GROUP)), world)
    terms = None
    if len(groups):  # more ranks than groups leaves some ranks without images
        shard = slice(int(groups[0]) * NOISE_GROUP, (int(groups[-1]) + 1) * NOISE_GROUP)
        terms = iwae_estimate(
            model, x[shard], k, batch_size, progress=progress,
            labels=None if labels is None else labels[shard], seed=seed, first_index=shard.start,
        )  # fmt: skip
    parts = [t for t in gather_objects(terms, world) if t is not None]
    return {name: torch.cat([t[name] for t in parts]) for name in parts[0]}


def likelihood_fields(
    model: LatentModel,
    x: Tensor,
    k: int,
    batch_size: int,
    seed: int,
    progress: bool = False,
    labels: Tensor | None = None,
    world: World = World(),
) -> dict[str, Any] | None:
    """The eval.json fields about the data's likelihood: bounds, KL, active units and
    the mutual information I(x; z) over the first EVAL_MI_POINTS images
    (``vaelab.evaluation.bounds.mutual_information``); ``labels``: those of ``x``, for a
    conditional model. Of several ranks (``world``), each computes the bounds of its shard
    of ``x`` and rank 0 the rest; the others get None.

    A plain autoencoder has no q(z|x): its bounds, KL and mutual information are None."""
    if model.stochastic:
        t = sharded_iwae_terms(model, x, k, batch_size, seed, progress, labels, world)
        if not world.is_main:
            return None
        neg_elbo = t["recon"] + t["kl"]
        fields = {
            "neg_elbo": float(neg_elbo.mean()),
            "neg_elbo_se": _se(neg_elbo),
            "recon": float(t["recon"].mean()),
            "kl": float(t["kl"].mean()),
            "nll_iwae": float(t["nll_iwae"].mean()),
            "nll_iwae_se": _se(t["nll_iwae"]),
            # None against a learned prior: a mixture does not factorise over dimensions
            "kl_per_dim": [round(float(v), 6) for v in t["kl_per_dim"].mean(0)]
            if model.closed_form_kl
            else None,
        }
    elif not world.is_main:
        return None
    else:
        t = autoencoder_terms(model, x, labels=labels)
        fields = dict.fromkeys(
            ("neg_elbo", "neg_elbo_se", "recon", "kl", "nll_iwae", "nll_iwae_se", "kl_per_dim")
        )
        fields["recon"] = float(t["recon"].mean())
    au, var = active_units(t["mu"])
    usage = latent_usage(t["mu"], t.get("logvar"), EVAL_MI_POINTS, seed)
    fields.update(
        active_units=au,
        latent_dim=int(t["mu"].shape[1]),
        mu_variance_per_dim=[round(float(v), 6) for v in var],
        mutual_information=usage["mutual_information"],
        mutual_information_max=usage.get("mutual_information_max"),
    )
    return fields


def evaluate_run(
    run: Run | str | Path,
    iw_samples: int = 5000,
    split: str = "test",
    batch_size: int = 100,
    binarize: str | None = None,
    n_samples: int = 10000,
    scores: bool = True,
    data: Dataset | None = None,
    device: str = "auto",
    seed: int = 0,
    write: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = print,
    n_images: int | None = None,
    checkpoint: str = "last",
) -> dict[str, Any] | None:
    """Evaluate a run and (``write``) save RUN/eval.json; returns the same dict.

    ``checkpoint``: the weights scored, ``"last"`` (checkpoints/last.pt) or ``"best"``
    (best.pt, the epoch of lowest validation loss of a --val-size run); eval.json says
    which, and its epoch.

    ``data`` (the full, grey dataset) skips loading it; ``binarize`` overrides the run's
    own binarisation of the scored split; ``scores=False`` skips the sample scores;
    ``n_images`` scores only the first N images of the split (all of them when None or
    more than there are): a quick estimate, e.g. in a notebook. Writing eval.json, it
    holds the run's writer lock (vaelab.lock), and eval.json carries its checksum.

    Started by torchrun (WORLD_SIZE in the environment), this process is one of the
    ranks that share the importance-sampled bounds (see the module docstring): rank 0
    holds the lock, computes everything else, writes eval.json and returns the dict; the
    other ranks return None."""
    check_arguments(iw_samples, batch_size, n_samples, binarize, split)
    if n_images is not None and (not isinstance(n_images, int) or n_images < 1):
        raise VaelabError(f"n_images must be a positive integer or None, got {n_images!r}")
    run = run if isinstance(run, Run) else load_run(run, checkpoint=checkpoint)
    world = world_from_env()
    write = write and world.is_main  # one writer of eval.json: rank 0
    # One writer: a run being trained or evaluated elsewhere is refused now, not later.
    with RunLock(run.path) if write else contextlib.nullcontext():
        result = _evaluate(
            run, iw_samples, split, batch_size, binarize, n_samples, scores, data, device,
            seed, progress, log, n_images, world,
        )  # fmt: skip
        if result is not None:
            result["checkpoint"] = checkpoint
        if write and result is not None:
            try:
                atomic_write_json(run.paths.eval, seal_json(result))
            except StorageError as exc:
                raise StorageError(
                    f"{exc}; eval.json is not written and the rest of the run is unchanged",
                    exc.errno,
                    exc.path,
                ) from None
    return result


def _evaluate(
    run: Run,
    iw_samples: int,
    split: str,
    batch_size: int,
    binarize: str | None,
    n_samples: int,
    scores: bool,
    data: Dataset | None,
    device: str,
    seed: int,
    progress: bool,
    log: Callable[[str], None],
    n_images: int | None,
    world: World,
) -> dict[str, Any] | None:
    from vaelab import __version__
    from vaelab.data.datasets import load_dataset

    t0 = time.perf_counter()
    cfg = run.config
    raw = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    scored = run.dataset(data=raw, binarize=binarize)
    mode = binarize or run.config.binarize
    x = split_images(scored, split, mode)[:n_images]
    binary = bool(((x == 0) | (x == 1)).all())
    dev = select_device(device, world)
    model = run.model.to(dev)
    labels = split_labels(scored, split)[:n_images] if model.conditional else None
    stochastic = model.stochastic
    likelihood = cfg.likelihood
    result: dict[str, Any] = {
        "run": str(run.path),
        "epoch": run.epoch,
        "model": run.config.model,
        "split": split,
        "n_images": len(x),
        "binarize": mode,
        "binary_data": binary,
        "likelihood": likelihood,
        "beta": run.config.beta,
        "prior": run.config.prior,  # the p(z) of log p(z), the KL and the sample scores
        "iw_samples": iw_samples if stochastic else None,
    }
    init_process_group(world, dev)
    try:
        failpoint(world)
        fields = likelihood_fields(
            model, x, iw_samples, batch_size, seed, progress and world.is_main, labels, world
        )
    except RuntimeError as exc:
        if world.distributed and is_peer_failure(exc):
            # The launcher blames the first rank it sees exit: give it time (it looks every
            # 0.1 s) to see the rank that failed and stop this one, before this one exits.
            time.sleep(PEER_LOST_GRACE_S)
            first = str(exc).splitlines()[0][:100]
            raise RankLostError(f"rank {world.rank}: another rank stopped ({first})") from None
        raise
    finally:
        destroy_process_group()
    if fields is None:  # a rank > 0: its shard is with rank 0 now
        model.cpu()
        return None
    result.update(
        fields,
        processes=world.size,
        seconds_likelihood=round(time.perf_counter() - t0, 2),
        sample_scores=None,
    )
    if scores:
        from vaelab.evaluation.classifier import score_prior_samples

        t1 = time.perf_counter()
        result["sample_scores"] = score_prior_samples(model, raw, n_samples, seed, log)
        result["sample_scores"]["seconds"] = round(time.perf_counter() - t1, 2)
        if model.conditional:  # also at the top: the number a conditional run is judged by
            result["label_accuracy"] = result["sample_scores"]["label_accuracy"]
    note = _data_note(binary, likelihood, stochastic)
    if stochastic and run.config.beta != 1:
        note += f"; trained with beta = {run.config.beta:g}, but neg_elbo is the beta = 1 bound"
    result.update(
        seed=seed,
        device=str(next(model.parameters()).device),
        seconds=round(time.perf_counter() - t0, 2),
        note=note,
        vaelab_version=__version__,
    )
    model.cpu()
    return result


def _se(values: Tensor) -> float | None:
    """Standard error of the mean over images."""
    return float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else None
