"""Training commands: ``vaelab train``, ``vaelab models``, ``vaelab data``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from vaelab import config, setting_spec, setting_values
from vaelab.cli import flag
from vaelab.training.threads import parse_threads

DEFAULTS_NOTE = (
    "defaults are the lecture's: MNIST, d=20, hidden=d^2, BCE+KL, Adam 1e-3, batch 256, 10 epochs"
)


def text_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a text parser of :mod:`vaelab.setting_values`: the
    parser's ValueError becomes argparse's one-line message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


int_list = text_type(setting_values.int_list)
SIMPLE_TYPES = {"int": int, "float": float}  # the annotations that say how to read text


def add_field_argument(g: argparse._ActionsContainer, field: dataclasses.Field) -> None:
    """The flag of one TrainConfig field (``latent_dim`` -> ``--latent-dim``), from its
    annotation and its metadata (see :func:`vaelab.setting_spec.setting`)."""
    meta = field.metadata
    base = field.type.split(" | ")[0]  # "int | None" -> "int" (annotations are text here)
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS}
    if base == "bool":
        kwargs["action"] = "store_true"
    elif "parse" in meta:
        kwargs["type"] = text_type(meta["parse"])
    elif base in SIMPLE_TYPES:
        kwargs["type"] = SIMPLE_TYPES[base]
    kwargs.update({k: meta[k] for k in ("metavar", "choices") if k in meta})
    kwargs["help"] = meta["help"].format(default=field.default)
    g.add_argument(flag(field.name), **kwargs)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Training flags: one per TrainConfig field, in its group, plus the flags of the run
    rather than its settings. Defaults are SUPPRESSed so that only flags the user gave
    reach the config (and --resume can tell which settings were asked to change)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(config.TrainConfig):
        title = field.metadata["group"]
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        add_field_argument(groups[title], field)
    S = argparse.SUPPRESS
    groups[setting_spec.OPTIMISATION].add_argument(
        "--nproc",
        type=int,
        default=S,
        metavar="N",
        help="train in N processes with torch.distributed (DDP; gloo on CPU, NCCL on GPU), "
        "as torchrun --nproc-per-node N -m vaelab train ... does; --batch-size stays global",
    )
    g = groups[setting_spec.RUN]
    g.add_argument(
        "--out", default=S, metavar="RUN", help="run directory to create (default runs/<timestamp>)"
    )
    g.add_argument(
        "--resume", default=S, metavar="RUN", help="continue RUN from its last checkpoint"
    )
    g.add_argument(
        "--from-epoch",
        type=int,
        default=S,
        metavar="E",
        help="with --resume: continue from checkpoints/epoch-EEE.pt instead of last.pt (a "
        "--keep-every copy continues exactly; a cached epoch's weights-only checkpoint with "
        "a fresh optimiser state); a damaged last.pt names the newest intact one",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    o = groups[setting_spec.OPTIMISATION]
    o.add_argument(
        "--threads",
        type=text_type(parse_threads),
        default=S,
        metavar="auto|N",
        help="CPU threads: auto (default) measures the fastest count and OpenMP spin for "
        "this CPU and model once (cached; a choice of fewer threads than cores is measured "
        "once more by the next run) and uses fewer while other processes need the cores; "
        "N: exactly N. OMP_NUM_THREADS / GOMP_SPINCOUNT in the environment win",
    )
    o.add_argument(
        "--recalibrate",
        action="store_true",
        default=S,
        help="with --threads auto: measure again instead of using the cached choice",
    )
    g.add_argument(
        "--report", action="store_true", default=S, help="write RUN/report.html at the end"
    )


RUN_ONLY = {"out", "resume", "from_epoch", "quiet", "report", "threads", "recalibrate"}
RESUMABLE = {"epochs", "device", "time_budget"}
NOT_GIVEN = ("func", "command", "argv", "prepare", "thread_plan")


def run_settings(given: dict) -> dict:
    """The run's TrainConfig settings as plain values, without importing torch: those
    given, or for --resume the run's saved ones (with --epochs/--device as given)."""
    settings = {k: v for k, v in given.items() if k not in RUN_ONLY and k not in NOT_GIVEN}
    settings.pop("nproc", None)
    if "preset" in settings and "resume" not in given:
        from vaelab.presets import preset_settings

        settings = preset_settings(settings.pop("preset"), settings)
    if "resume" in given:
        from vaelab.checksums import read_json

        try:
            saved = read_json(os.path.join(given["resume"], "config.json"))[0]["config"]
        except Exception:  # missing, damaged, another tool's: train() says so, in its words
            saved = {}
        settings = {**saved, **settings}
    return settings


def prepare_train(args: argparse.Namespace) -> None:
    """Before torch loads: the run's CPU threads and OpenMP spin (vaelab.training.threads).
    The launcher of --nproc N plans nothing: each of its processes gets cores/N threads."""
    from vaelab.errors import VaelabError
    from vaelab.training.threads import plan_threads, set_spin

    given = vars(args)
    if given.get("nproc", 1) > 1 and "WORLD_SIZE" not in os.environ:
        for name in ("threads", "recalibrate"):
            if name in given:
                raise VaelabError(
                    f"--{name} applies to one process; --nproc N gives each of its N "
                    "processes cores/N threads"
                )
        return
    plan = plan_threads(
        run_settings(given), given.get("threads", "auto"), given.get("recalibrate", False)
    )
    set_spin(plan)
    args.thread_plan = plan


def cmd_train(args: argparse.Namespace) -> int:
    from vaelab.config import TrainConfig
    from vaelab.errors import TrainingInterrupted, VaelabError
    from vaelab.training.distributed import world_from_env
    from vaelab.training.loop import train
    from vaelab.training.threads import governed

    given = {k: v for k, v in vars(args).items() if k not in NOT_GIVEN}
    quiet = given.pop("quiet", False)
    nproc = given.pop("nproc", 1)
    if nproc < 1:
        raise VaelabError(f"--nproc must be a positive integer, got {nproc}")
    if "from_epoch" in given and "resume" not in given:
        raise VaelabError("--from-epoch chooses the checkpoint of --resume RUN; give both")
    if "resume" in given:
        changed = sorted(set(given) - RUN_ONLY - RESUMABLE)
        if changed:
            raise VaelabError(
                "--resume continues with the run's saved settings; only --epochs and --device "
                "can change, or --time-budget in a run started with it "
                f"(got --{changed[0].replace('_', '-')})"
            )
        config = None
    else:
        config = TrainConfig(**run_settings(given))  # a --preset's settings filled in
    budget = "time_budget" in given or (config is not None and config.time_budget is not None)
    if nproc > 1 and budget:
        raise VaelabError("--time-budget trains in one process for now; drop --nproc")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        device = given.get("device") or (config.device if config is not None else None)
        return _launch_processes(nproc, args.argv, given, device)
    main = world_from_env().is_main
    log = (lambda _msg: None) if quiet else print  # train() keeps other ranks quiet
    plan = getattr(args, "thread_plan", None)
    if main:
        _bf16_note(run_settings(given))
        if plan is not None:
            log(plan.line)
    try:
        with governed(plan) if plan is not None else contextlib.nullcontext():
            if config is None:
                root = train(
                    resume=given["resume"],
                    epochs=given.get("epochs"),
                    device=given.get("device"),
                    from_epoch=given.get("from_epoch"),
                    time_budget=given.get("time_budget"),
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


def _bf16_note(settings: dict) -> None:
    """One line on stderr when --precision bf16 will train on a CPU without native
    bfloat16 (it will likely be slower than fp32)."""
    if settings.get("precision") != "bf16" or settings.get("device", "auto") == "cuda":
        return
    import torch

    from vaelab.training.cpu import bf16_note, cpu_description

    if settings.get("device", "auto") == "auto" and torch.cuda.is_available():
        return
    if (note := bf16_note(cpu_description()[1])) is not None:
        print(note, file=sys.stderr)


def _launch_processes(nproc: int, argv: list[str], given: dict, device: str | None) -> int:
    """``vaelab train --nproc N ...``: the same command in N torch.distributed processes,
    after the device check that would otherwise fail in every rank at once (``device``:
    the run's, None when a resumed run keeps its own). A new run without --out gets its
    timestamped folder here, so every rank names it."""
    from vaelab.training.distributed import World, launch, strip_nproc
    from vaelab.training.run_dir import default_run_dir
    from vaelab.training.step import select_device

    if device is not None:
        select_device(device, World(0, nproc), local_size=nproc)
    argv = strip_nproc(argv)
    if "resume" not in given and "out" not in given:
        argv += ["--out", str(default_run_dir())]
    return launch(nproc, argv)


def cmd_presets(args: argparse.Namespace) -> int:
    from vaelab.presets import preset_lines

    print("\n".join(preset_lines()))
    return 0


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
    p.set_defaults(prepare=prepare_train)
    add_train_arguments(p)
    command("models", cmd_models, "list the registered models")
    command(
        "presets",
        cmd_presets,
        "list the named training recipes of --preset: what each is, its source, what it "
        "reached here",
    )
    p = command("data", cmd_data, "load a dataset (filling the cache) and print its statistics")
    p.add_argument(
        "--dataset", default="mnist", help="mnist, fashion-mnist, an IDX folder or an .npz"
    )
    p.add_argument("--data-dir", default=None, help="look here first for the data files")
