"""Training commands: ``vaelab train``, ``vaelab models``, ``vaelab data``."""

from __future__ import annotations

import argparse
import os

DEFAULTS_NOTE = (
    "defaults are the lecture's: MNIST, d=20, hidden=d^2, BCE+KL, Adam 1e-3, batch 256, 10 epochs"
)


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def sigma_value(text: str) -> float | str:
    """A positive number or the word 'learned' (--gaussian-sigma)."""
    if text == "learned":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'learned', got {text!r}") from None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Training flags. Defaults are SUPPRESSed so that only flags the user gave reach the
    config (and --resume can tell which settings were asked to change)."""
    import dataclasses
    import types

    from vaelab.config import TrainConfig

    # The defaults without building a TrainConfig (its validation imports torch).
    d = types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(TrainConfig)})
    S = argparse.SUPPRESS
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=S,
        help=f"mnist, fashion-mnist, an IDX folder or an .npz (default {d.dataset})",
    )
    g.add_argument(
        "--data-dir", default=S, help="look here first for the data files (also $VAELAB_DATA)"
    )
    g.add_argument(
        "--limit",
        type=int,
        default=S,
        metavar="N",
        help="train on the first N training images only",
    )
    g.add_argument(
        "--binarize",
        default=S,
        choices=["none", "dynamic", "static"],
        help="Bernoulli-binarised pixels: dynamic re-samples each batch (default none)",
    )
    g = p.add_argument_group("model and loss")
    g.add_argument(
        "--model", default=S, help=f"model name, see `vaelab models` (default {d.model})"
    )
    g.add_argument(
        "--latent-dim",
        type=int,
        default=S,
        metavar="D",
        help=f"latent size d (default {d.latent_dim})",
    )
    g.add_argument("--hidden", type=int, default=S, metavar="H", help="hidden units (default d^2)")
    g.add_argument(
        "--recon",
        default=S,
        choices=["bce", "mse"],
        help="the lecture's reconstruction loss: bce, or mse = 0.5 * squared error (default bce)",
    )
    g.add_argument(
        "--likelihood",
        default=S,
        choices=["bernoulli", "continuous-bernoulli", "gaussian"],
        help="p(x|z) instead of --recon: bernoulli (= bce), continuous-bernoulli (a density "
        "on [0, 1]), gaussian (normalised, mean sigmoid(logits))",
    )
    g.add_argument(
        "--gaussian-sigma",
        type=sigma_value,
        default=S,
        metavar="S|learned",
        help="the gaussian likelihood's scale: a fixed number (default 1) or 'learned'",
    )
    g.add_argument(
        "--beta", type=float, default=S, help=f"weight of the KL term (default {d.beta:g})"
    )
    g.add_argument(
        "--kl-warmup",
        type=float,
        default=S,
        metavar="EPOCHS",
        help="anneal the KL weight linearly from 0 to beta over EPOCHS epochs (default 0: off)",
    )
    g.add_argument(
        "--objective",
        default=S,
        choices=["elbo", "iwae"],
        help="training bound: elbo, or iwae, the importance-weighted bound (default elbo)",
    )
    g.add_argument(
        "--iw-k",
        type=int,
        default=S,
        metavar="K",
        help="importance samples of --objective iwae (default 5; K=1 is the ELBO)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=S, help=f"Adam learning rate (default {d.lr:g})")
    g.add_argument(
        "--batch-size",
        type=int,
        default=S,
        metavar="B",
        help=f"batch size (default {d.batch_size})",
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=S,
        metavar="E",
        help=f"training epochs after epoch 0 (default {d.epochs})",
    )
    g.add_argument("--seed", type=int, default=S, help=f"random seed (default {d.seed})")
    g.add_argument(
        "--device", default=S, choices=["auto", "cpu", "cuda"], help="where to train (default auto)"
    )
    g.add_argument(
        "--precision",
        default=S,
        choices=["fp32", "bf16"],
        help="bf16: bfloat16 matmuls under autocast, fp32 weights and losses; about 2x faster "
        "on CPUs with AVX512-BF16/AMX and on GPUs (default fp32)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        default=S,
        help="torch.compile the training step (slow to start; needs a C++ compiler on CPU)",
    )
    g.add_argument(
        "--nproc",
        type=int,
        default=S,
        metavar="N",
        help="train in N processes with torch.distributed (DDP; gloo on CPU, NCCL on GPU), "
        "as torchrun --nproc-per-node N -m vaelab train ... does; --batch-size stays global",
    )
    g.add_argument(
        "--grad-clip",
        type=float,
        default=S,
        metavar="NORM",
        help="clip the gradient's global norm (default: no clipping)",
    )
    g = p.add_argument_group("run directory")
    g.add_argument(
        "--out", default=S, metavar="RUN", help="run directory to create (default runs/<timestamp>)"
    )
    g.add_argument(
        "--resume", default=S, metavar="RUN", help="continue RUN from its last checkpoint"
    )
    g.add_argument(
        "--embed-epochs",
        type=int_list,
        default=S,
        metavar="LIST",
        help="epochs whose test-set latents are cached (default 0,5,10 that run, and the last)",
    )
    g.add_argument(
        "--keep-every",
        type=int,
        default=S,
        metavar="N",
        help="also keep a resumable checkpoint every N epochs (checkpoints/epoch-NNN.pt)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    g.add_argument(
        "--report", action="store_true", default=S, help="write RUN/report.html at the end"
    )
    g.add_argument(
        "--tensorboard",
        action="store_true",
        default=S,
        help="also log losses and images per epoch to RUN/tb/ (needs vaelab[tensorboard])",
    )


RUN_ONLY = {"out", "resume", "quiet", "report"}
RESUMABLE = {"epochs", "device"}


def cmd_train(args: argparse.Namespace) -> int:
    from vaelab.config import TrainConfig
    from vaelab.errors import TrainingInterrupted, VaelabError
    from vaelab.training.distributed import world_from_env
    from vaelab.training.loop import train

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "argv")}
    quiet = given.pop("quiet", False)
    nproc = given.pop("nproc", 1)
    if nproc < 1:
        raise VaelabError(f"--nproc must be a positive integer, got {nproc}")
    if "resume" in given:
        changed = sorted(set(given) - RUN_ONLY - RESUMABLE)
        if changed:
            raise VaelabError(
                "--resume continues with the run's saved settings; only --epochs and --device "
                f"can change (got --{changed[0].replace('_', '-')})"
            )
        config = None
    else:
        config = TrainConfig(**{k: v for k, v in given.items() if k not in RUN_ONLY})
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_processes(nproc, args.argv, given)
    main = world_from_env().is_main
    log = (lambda _msg: None) if quiet else print  # train() keeps other ranks quiet
    try:
        if config is None:
            root = train(
                resume=given["resume"],
                epochs=given.get("epochs"),
                device=given.get("device"),
                progress=not quiet,
                log=log,
            )
        else:
            root = train(config, out=given.get("out"), progress=not quiet, log=log)
    except TrainingInterrupted as exc:
        if main:
            raise
        return exc.exit_code  # rank 0 says where the checkpoint is
    if not main:
        return 0
    log(f"run written to {root}")
    if given.get("report"):
        from vaelab.viz.report import build_report

        log(f"report written to {build_report(root)}")
    return 0


def _launch_processes(nproc: int, argv: list[str], given: dict) -> int:
    """``vaelab train --nproc N ...``: the same command in N torch.distributed processes.
    A new run without --out gets its timestamped folder here, so every rank names it."""
    from vaelab.training.distributed import launch, strip_nproc
    from vaelab.training.run_dir import default_run_dir

    argv = strip_nproc(argv)
    if "resume" not in given and "out" not in given:
        argv += ["--out", str(default_run_dir())]
    return launch(nproc, argv)


def cmd_models(args: argparse.Namespace) -> int:
    from vaelab.models import MODELS

    width = max(map(len, MODELS))
    for name, entry in MODELS.items():
        print(f"{name:<{width}}  {entry.summary}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from vaelab.data.datasets import load_dataset

    data = load_dataset(args.dataset, args.data_dir)
    x = data.x_train
    print(
        f"{data.name}: {len(x)} train / {len(data.x_test)} test images of shape "
        f"{tuple(data.input_shape)}, values in [{float(x.min()):g}, {float(x.max()):g}], "
        f"train mean {float(x.mean()):.4f} std {float(x.std()):.4f}"
    )
    print(f"sha256 {data.sha256}\nsource {data.source}")
    return 0


def register(command) -> None:
    p = command("train", cmd_train, "train a model and write a run directory")
    p.epilog = DEFAULTS_NOTE
    add_train_arguments(p)
    command("models", cmd_models, "list the registered models")
    p = command("data", cmd_data, "load a dataset (filling the cache) and print its statistics")
    p.add_argument(
        "--dataset", default="mnist", help="mnist, fashion-mnist, an IDX folder or an .npz"
    )
    p.add_argument("--data-dir", default=None, help="look here first for the data files")
