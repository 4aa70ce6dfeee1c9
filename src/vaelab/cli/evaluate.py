"""Measurement commands: ``vaelab evaluate``, ``vaelab classifier train``, ``vaelab sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from vaelab.cli.train import add_train_arguments
from vaelab.setting_spec import BINARIZE_CHOICES, DEVICE_CHOICES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def add_eval_arguments(p: argparse.ArgumentParser, batch_flag: str) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--iw-samples",
        type=positive_int,
        default=5000,
        metavar="K",
        help="importance samples per image for nll_iwae (default 5000)",
    )
    g.add_argument(
        batch_flag,
        dest="eval_batch_size",
        type=positive_int,
        default=100,
        metavar="B",
        help="images scored between two releases of freed memory; the numbers do not "
        "depend on it: images are scored in fixed groups of 100, as many samples at a time "
        "as fit in 4096 decoder rows on CPU (default 100)",
    )
    g.add_argument(
        "--n-samples",
        type=positive_int,
        default=10000,
        metavar="N",
        help="prior samples scored by the classifier (default 10000)",
    )
    g.add_argument(
        "--no-sample-scores",
        action="store_true",
        help="skip the classifier scores of prior samples (and training the classifier)",
    )
    g.add_argument(
        "--eval-seed", type=int, default=0, help="seed of the importance and prior samples"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    import os

    from vaelab.evaluation.evaluate import evaluate_run

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_evaluation(args)
    log = (lambda _msg: None) if args.quiet else print
    result = evaluate_run(
        args.run,
        iw_samples=args.iw_samples,
        split=args.split,
        batch_size=args.eval_batch_size,
        binarize=args.binarize,
        n_samples=args.n_samples,
        scores=not args.no_sample_scores,
        device=args.device,
        seed=args.eval_seed,
        progress=not args.quiet,
        log=log,
        n_images=args.n_images,
        checkpoint=args.checkpoint,
    )
    if result is None:  # a rank > 0 of torchrun: rank 0 prints and writes
        return 0
    print(format_result(result))
    log(f"wrote {args.run.rstrip('/')}/eval.json")
    return 0


def _launch_evaluation(args: argparse.Namespace) -> int:
    """``vaelab evaluate --nproc N ...``: the same command in N torch.distributed processes
    (``vaelab.training.distributed.launch``), after the checks that would otherwise fail
    in every rank at once."""
    from vaelab.evaluation.evaluate import check_arguments
    from vaelab.lock import RunLock
    from vaelab.run import load_run
    from vaelab.training.distributed import World, launch, strip_nproc
    from vaelab.training.step import select_device

    check_arguments(
        args.iw_samples, args.eval_batch_size, args.n_samples, args.binarize, args.split
    )
    load_run(args.run)
    select_device(args.device, World(0, args.nproc), local_size=args.nproc)
    with RunLock(args.run):  # free now? (rank 0 takes it again for the whole evaluation)
        pass
    return launch(args.nproc, strip_nproc(args.argv))


def cmd_classifier_train(args: argparse.Namespace) -> int:
    from vaelab.data.datasets import load_dataset
    from vaelab.evaluation.classifier import get_classifier

    data = load_dataset(args.dataset, args.data_dir)
    _, info = get_classifier(data, retrain=args.force, epochs=args.epochs)
    state = "trained" if info["trained_now"] else "already cached (use --force to retrain)"
    print(
        f"classifier for {data.name} {state}: test accuracy "
        f"{100 * info['test_accuracy']:.2f}%, {info['path']}"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses

    from vaelab.config import TrainConfig
    from vaelab.errors import VaelabError
    from vaelab.evaluation.sweep import sweep

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "argv")}
    if "resume" in given or "from_epoch" in given:
        raise VaelabError("vaelab sweep trains new runs; --resume is not available here")
    if given.get("nproc", 1) != 1:
        raise VaelabError("vaelab sweep trains in one process; --nproc is for vaelab train")
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"beta"}
    config = TrainConfig(**{k: v for k, v in given.items() if k in train_keys})
    log = (lambda _msg: None) if args.quiet else print
    sweep(
        "beta",
        args.beta,
        config,
        args.out,
        iw_samples=args.iw_samples,
        eval_batch_size=args.eval_batch_size,
        n_samples=args.n_samples,
        scores=not args.no_sample_scores,
        seed=args.eval_seed,
        progress=not args.quiet,
        log=log,
    )
    if given.get("report"):  # each run's report, as vaelab train --report writes it
        from pathlib import Path

        from vaelab.evaluation.sweep import run_name
        from vaelab.viz.report import build_report

        for value in args.beta:
            log(f"report written to {build_report(Path(args.out) / run_name('beta', value))}")
    return 0


def register(command) -> None:
    p = command(
        "evaluate",
        cmd_evaluate,
        "sampled ELBO, IWAE estimate of the NLL, active units and sample scores -> RUN/eval.json",
    )
    p.add_argument("run", metavar="RUN", help="a run directory written by vaelab train")
    p.add_argument(  # checked by evaluate_run against SPLITS (which imports torch)
        "--split",
        default="test",
        help="the images scored: test, train or val (a --val-size run's hold-out; default test)",
    )
    p.add_argument(
        "--checkpoint",
        default="last",
        choices=("last", "best"),
        help="the weights scored: last (checkpoints/last.pt, default) or best (best.pt: "
        "the epoch of lowest validation loss, kept by --val-size runs)",
    )
    p.add_argument(
        "--binarize",
        default=None,
        choices=BINARIZE_CHOICES,
        help="score on other binarised data than the run's own (default: the run's)",
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="(default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.add_argument(
        "--n-images",
        type=positive_int,
        default=None,
        metavar="N",
        help="score only the first N images of the split: a quick estimate (default: all)",
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        metavar="N",
        help="share the importance-sampled NLL between N processes with torch.distributed "
        "(gloo on CPU, NCCL with a GPU each), as torchrun --nproc-per-node N -m vaelab "
        "evaluate ... does; the same numbers as one process (default 1)",
    )
    add_eval_arguments(p, "--batch-size")

    p = command("classifier", None, "the digit classifier that scores prior samples")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    sub.required = True
    t = sub.add_parser(
        "train",
        help="train the CNN classifier of a dataset (>= 99%% on MNIST) into the user cache",
        description="train the CNN classifier of a dataset into the user cache",
    )
    t.set_defaults(func=cmd_classifier_train)
    t.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, IDX folder, .npz")
    t.add_argument("--data-dir", default=None, help="look here first for the data files")
    t.add_argument("--epochs", type=positive_int, default=5, help="(default 5)")
    t.add_argument("--force", action="store_true", help="retrain even if one is cached")

    p = command(
        "sweep",
        cmd_sweep,
        "train one run per beta on shared data, evaluate each, write a table and a "
        "rate-distortion plot",
    )
    add_train_arguments(p)
    p.conflict_handler = "resolve"  # --beta and --out below replace the training flags
    g = p.add_argument_group("sweep")  # a group made now inherits "resolve"
    g.add_argument(
        "--beta",
        type=float_list,
        required=True,
        metavar="LIST",
        help="comma-separated KL weights, e.g. 0.5,1,2,4",
    )
    g.add_argument("--out", required=True, metavar="DIR", help="one run per value in DIR/")
    add_eval_arguments(p, "--eval-batch-size")


def format_result(result: dict[str, Any]) -> str:
    """A short printed table of an evaluation."""
    lines = [
        f"{result['run']}: {result['split']} split, {result['n_images']} images, "
        f"binarize {result['binarize']}, epoch {result['epoch']}"
        + (" (checkpoints/best.pt)" if result.get("checkpoint") == "best" else "")
    ]
    if result["nll_iwae"] is not None:
        lines += [
            f"  neg_elbo      {result['neg_elbo']:9.2f} ± {result['neg_elbo_se']:.2f}   "
            f"= recon {result['recon']:.2f} + kl {result['kl']:.2f}  (z sampled)",
            f"  nll_iwae      {result['nll_iwae']:9.2f} ± {result['nll_iwae_se']:.2f}   "
            f"(K = {result['iw_samples']})",
        ]
    else:
        lines.append(f"  recon         {result['recon']:9.2f}   (z = code)")
    lines.append(f"  active units  {result['active_units']:9d} of {result['latent_dim']}")
    if result.get("mutual_information") is not None:
        lines.append(
            f"  I(x; z)       {result['mutual_information']:9.2f}   nats, of at most "
            f"log N = {result['mutual_information_max']:.2f} (aggregate posterior)"
        )
    s = result.get("sample_scores")
    if s:
        lines.append(
            f"  samples       confidence {s['mean_confidence']:.3f}, "
            f"{100 * s['confident_fraction']:.1f}% >= 0.9, class entropy "
            f"{s['class_entropy']:.2f}/{s['class_entropy_max']:.2f} nats, "
            f"Fréchet {s['frechet_distance']:.2f}  (N = {s['n_samples']})"
        )
    acc = result.get("label_accuracy")
    if acc:
        lines.append(
            f"  label acc.    {100 * acc['overall']:8.1f}%   samples decoded with label k read "
            f"as k; worst label {acc['worst_label']}: {100 * acc['worst']:.1f}%"
        )
    lines.append(f"  seconds       {result['seconds']:9.1f}")
    lines.append(f"note: {result['note']}")
    return "\n".join(lines)
