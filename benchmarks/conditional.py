"""Does the label decide the class? Conditional VAEs on MNIST, scored by label accuracy.

    .venv/bin/python benchmarks/conditional.py [--epochs 10] [--root runs/conditional]
        [--only d20,defaults,...] [--seed 1] [--samples 10000] [--n-test 2000] [--k 100]
        [--out benchmarks/results/conditional.jsonl]

Each variant is a ``vaelab train --condition label`` run (grey MNIST, seed 1, the other
settings the lecture's unless the variant says otherwise), trained in this process on
one data load. At every cached epoch (``--embed-epochs``) N prior samples z ~ N(0, I)
are decoded, sample i with label i mod 10, and vaelab's own digit classifier
(``vaelab.evaluation.classifier``, cached after its first training) reads them: the
label accuracy is how often it reads label k for a sample decoded with label k, overall
and per label (docs/results.md, "Conditional VAE"). Also printed: the test loss (z = mu),
and at the last epoch the honest bounds on the first ``--n-test`` test images (with
their labels): the sampled -ELBO (beta = 1) and the IWAE estimate with ``--k`` samples,
and the seconds of training. A finished run in ``--root`` is scored again, not retrained.

The variant ``hidden-label`` also feeds the one-hot label to the decoder's hidden layer
(Linear(h + K, D) after the ReLU): the issue's "label also in the decoder's hidden layer",
built here as a model class and a registry line, as tests/test_model_interface.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # as the vaelab command: before torch loads
import torch  # noqa: E402
from machine import print_machine  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from vaelab.config import TrainConfig  # noqa: E402
from vaelab.data.datasets import load_dataset  # noqa: E402
from vaelab.evaluation.bounds import iwae_estimate  # noqa: E402
from vaelab.evaluation.classifier import get_classifier, sample_scores  # noqa: E402
from vaelab.models import MODELS, VAE, MLPConfig, ModelEntry  # noqa: E402
from vaelab.run import load_run  # noqa: E402
from vaelab.training.loop import train  # noqa: E402
from vaelab.viz.analysis import balanced_labels, prior_samples  # noqa: E402


class HiddenLabelVAE(VAE):
    """The MLP VAE with the one-hot label also appended to the decoder's hidden layer."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        self.decoder[2] = nn.Linear(config.hidden + config.n_classes, config.input_size)

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        hidden = self.decoder[1](self.decoder[0](self.with_label(z, labels)))  # (B, h)
        return self.decoder[2](self.with_label(hidden, labels))  # (B, h + K) in


MODELS["hidden-label"] = ModelEntry(MLPConfig, HiddenLabelVAE, "label also in the hidden layer")

# name -> TrainConfig settings besides condition="label" (hidden 400 unless given: d^2
# would shrink the network with d, and the question is the latent's size); "defaults" is
# a conditional run's defaults (d = 20, hidden 400, beta = CONDITIONAL_BETA)
VARIANTS = {
    "defaults": {},
    "d20": {"latent_dim": 20, "beta": 1.0},
    "d20-hidden-label": {"latent_dim": 20, "beta": 1.0, "model": "hidden-label"},
    "d20-beta2": {"latent_dim": 20, "beta": 2.0},
    "d20-beta3": {"latent_dim": 20, "beta": 3.0},
    "d20-beta4": {"latent_dim": 20, "beta": 4.0},
    "d8": {"latent_dim": 8, "beta": 1.0},
    "d4": {"latent_dim": 4, "beta": 1.0},
    "d4-hidden-label": {"latent_dim": 4, "beta": 1.0, "model": "hidden-label"},
    "d3": {"latent_dim": 3, "beta": 1.0},
    "d2": {"latent_dim": 2, "beta": 1.0},
    "d8-beta2": {"latent_dim": 8, "beta": 2.0},
    "d4-beta2": {"latent_dim": 4, "beta": 2.0},
    "conv-d20": {"model": "conv-vae", "beta": 1.0},
    "conv-defaults": {"model": "conv-vae"},
}


def bounds(model, data, n_test: int, k: int) -> dict:
    """-ELBO (z sampled, beta = 1) and the IWAE estimate on the first n_test test images."""
    x, y = data.x_test[:n_test], data.y_test[:n_test]
    g = torch.Generator().manual_seed(0)
    t = iwae_estimate(model, x, k, generator=g, labels=y if model.conditional else None)
    return {
        "neg_elbo": round(float((t["recon"] + t["kl"]).mean()), 3),
        "nll_iwae": round(float(t["nll_iwae"].mean()), 3),
        "kl": round(float(t["kl"].mean()), 3),
        "iw_k": k,
        "n_test": len(x),
    }


def score(model, classifier, n: int) -> dict:
    labels = balanced_labels(n, model.n_classes)
    samples = torch.from_numpy(prior_samples(model, n, seed=0, labels=labels))
    out = sample_scores(classifier, samples, samples[:2], labels=torch.from_numpy(labels))
    acc = out["label_accuracy"]
    return {
        "label_accuracy": acc["overall"],
        "worst": acc["worst"],
        "worst_label": acc["worst_label"],
        "per_label": [round(v, 4) for v in acc["per_label"]],
        "mean_confidence": out["mean_confidence"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--root", default=None, help="where the runs go (default: a temp folder)")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="append one JSON line per variant here")
    p.add_argument("--n-test", type=int, default=2000, help="test images for the bounds")
    p.add_argument("--k", type=int, default=100, help="importance samples for the bounds")
    args = p.parse_args()
    host = print_machine()
    data = load_dataset("mnist")
    classifier, info = get_classifier(data)
    print(f"classifier: {info['path']} (test accuracy {info['test_accuracy']:.4f})")
    root = Path(args.root or tempfile.mkdtemp(prefix="vaelab-conditional-"))
    checkpoints = sorted({min(5, args.epochs), args.epochs})
    for name in args.only.split(","):
        settings = {"hidden": 400, **VARIANTS[name]}
        config = TrainConfig(
            condition="label",
            epochs=args.epochs,
            seed=args.seed,
            embed_epochs=checkpoints,
            device="cpu",
            **settings,
        )
        t0 = time.perf_counter()
        out = root / f"{name}-seed{args.seed}"
        config_file = out / "config.json"
        if not (config_file.is_file() and "finished" in json.loads(config_file.read_text())):
            train(config, out=out, data=data, progress=False, log=lambda _m: None)
        seconds = time.perf_counter() - t0
        run = load_run(out)
        train_seconds = sum(m["train_seconds"] or 0 for m in run.metrics)
        for epoch in checkpoints:
            row = {
                "variant": name,
                "settings": settings,
                "seed": args.seed,
                "epoch": epoch,
                "test_loss": run.metrics[epoch]["test_loss"],
                "test_kl": run.metrics[epoch]["test_kl"],
                "test_recon": run.metrics[epoch]["test_recon"],
                **score(run.model_at(epoch), classifier, args.samples),
                "train_seconds": round(train_seconds, 1),
                "run_seconds": round(seconds, 1),
            }
            if epoch == args.epochs:
                row.update(bounds(run.model_at(epoch), data, args.n_test, args.k))
            print(
                f"{name:18s} epoch {epoch:2d}  label acc {100 * row['label_accuracy']:5.1f}%  "
                f"worst {100 * row['worst']:5.1f}% (label {row['worst_label']})  "
                f"test loss {row['test_loss']:6.2f} (kl {row['test_kl']:5.2f})  "
                f"train {train_seconds:5.1f} s"
                + (
                    f"  -elbo {row['neg_elbo']:6.2f}  iwae {row['nll_iwae']:6.2f}"
                    if "nll_iwae" in row
                    else ""
                ),
                flush=True,
            )
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps({**row, "machine": host}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
