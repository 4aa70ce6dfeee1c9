"""The ``vaelab`` command: a thin layer of argparse over the library.

Each subcommand parses its arguments and calls one library function; heavy imports
(torch, matplotlib) happen inside the command so ``vaelab --help`` is instant. Errors the
user can fix print one line on stderr and exit 2 (divergence: 3; a write the disk
refused, full, over quota or failing: 4); no tracebacks unless ``VAELAB_DEBUG=1``. A library error about a setting (``SettingError``: "lr must be ...")
is printed with the setting's flag ("--lr must be ...").
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def flag(setting: str) -> str:
    """The flag of a library setting: ``batch_size`` -> ``--batch-size``. Every flag of a
    TrainConfig field, an evaluate_run argument or a figure's argument is spelled so."""
    return "--" + setting.replace("_", "-")


# Each module registers its subcommands; adding a command area adds one line here.
COMMAND_MODULES = [
    "vaelab.cli.train",
    "vaelab.cli.serve",
    "vaelab.cli.figures",
    "vaelab.cli.evaluate",
    "vaelab.cli.verify",
]


def build_parser() -> Parser:
    import importlib

    from vaelab import __version__

    parser = Parser(prog="vaelab", description="Variational autoencoders: train, measure, see.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Parser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(command)
    return parser


# OpenMP threads that wait for each other spin for a long time by default; when another
# process shares the cores, a spinning thread holds the core its partner needs, and a
# 1-second epoch took 87 s with two runs side by side. A short spin keeps the quiet-machine
# speed and avoids that (docs/benchmarks.md, "Threads on a shared machine"). It must be
# set before torch loads OpenMP, i.e. before any command imports torch. `vaelab train`
# chooses its own first (``prepare``: vaelab.training.threads); a spin or wait policy in
# the environment is left alone.
OPENMP_SPIN = {"GOMP_SPINCOUNT": "1000"}
OPENMP_WAIT_ENV = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def set_default_spin() -> None:
    if "torch" not in sys.modules and not any(k in os.environ for k in OPENMP_WAIT_ENV):
        os.environ.update(OPENMP_SPIN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch
    from vaelab.errors import SettingError, VaelabError
    from vaelab.fileio import storage_error

    try:
        try:
            # What must happen before torch loads: a command's own choice, then the default.
            if (prepare := getattr(args, "prepare", None)) is not None:
                prepare(args)
            set_default_spin()
            return args.func(args)
        except OSError as exc:  # a disk that refused a write outside vaelab.fileio
            where = exc.filename or getattr(args, "out", None) or getattr(args, "run", None)
            if (failed := storage_error(exc, where)) is None:
                raise
            raise failed from None
    except VaelabError as exc:
        message = exc.spelled(flag) if isinstance(exc, SettingError) else exc
        sys.stderr.write(f"vaelab: error: {message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("vaelab: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not a user error: one line unless asked for more
        if os.environ.get("VAELAB_DEBUG"):
            raise
        sys.stderr.write(
            f"vaelab: internal error: {type(exc).__name__}: {exc} "
            "(set VAELAB_DEBUG=1 for the traceback)\n"
        )
        return 1
