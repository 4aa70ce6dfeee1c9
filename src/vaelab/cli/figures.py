"""Figure commands: ``sample``, ``relabel``, ``reconstruct``, ``interpolate``, ``embed``,
``bubbles``, ``manifold``, ``traverse``, ``report`` and ``compare``. Each loads a run and calls one library function
(:mod:`vaelab.viz.figures` or :mod:`vaelab.viz.report`), then prints the files it wrote."""

from __future__ import annotations

import argparse

from vaelab.cli.train import int_list


def _run(args: argparse.Namespace):
    from vaelab.run import load_run

    return load_run(args.run)


def _written(*paths) -> int:
    for p in paths:
        print(p)
    return 0


def label_arg(text: str) -> int | str:
    """--label: a class number or "all"."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class number or all, got {text!r}") from None


def cmd_sample(args: argparse.Namespace) -> int:
    from vaelab.viz.figures import make_samples

    run = _run(args)
    return _written(make_samples(run, args.out, args.n, args.seed, args.temperature, args.label))


def cmd_relabel(args: argparse.Namespace) -> int:
    from vaelab.viz.figures import make_relabel

    return _written(make_relabel(_run(args), args.n, args.out))


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaelab.viz.figures import make_reconstructions

    return _written(make_reconstructions(_run(args), args.out, args.n, args.epochs))


def cmd_interpolate(args: argparse.Namespace) -> int:
    from vaelab.errors import VaelabError
    from vaelab.viz.figures import make_interpolations

    if args.digits is None and (args.a is None or args.b is None):
        raise VaelabError("interpolate needs two test images: --a I --b J, or --digits 3 8")
    if args.digits is not None and (args.a is not None or args.b is not None):
        raise VaelabError("give either --a/--b or --digits, not both")
    pairs = None if args.digits is not None else [(args.a, args.b)]
    digits = tuple(args.digits) if args.digits is not None else None
    run = _run(args)
    return _written(make_interpolations(run, pairs, digits, args.steps, args.mode, args.out))


def cmd_embed(args: argparse.Namespace) -> int:
    from vaelab.viz.figures import make_embeddings

    return _written(make_embeddings(_run(args), args.epochs, args.method, args.n, args.out))


def cmd_bubbles(args: argparse.Namespace) -> int:
    from vaelab.viz.figures import make_bubbles

    return _written(*make_bubbles(_run(args), args.epochs, args.n, args.out))


def cmd_manifold(args: argparse.Namespace) -> int:
    from vaelab.viz.figures import make_manifold

    return _written(make_manifold(_run(args), args.grid, args.out, args.label))


def cmd_traverse(args: argparse.Namespace) -> int:
    from vaelab.errors import VaelabError
    from vaelab.viz.dimension_figures import make_traversal

    run = _run(args)
    d = run.model.latent_dim
    dims = None
    if args.dims is not None:  # numbered 1..d, as the figures label them (z1, z2, ...)
        bad = [j for j in args.dims if not 1 <= j <= d] or ([] if args.dims else ["(none)"])
        if bad:
            raise VaelabError(f"--dims {bad[0]} is outside 1..{d}, the latent dimensions z1..z{d}")
        dims = [j - 1 for j in args.dims]
    made = make_traversal(run, dims, args.range, args.steps, args.index, args.out, label=args.label)
    return _written(made)


def cmd_report(args: argparse.Namespace) -> int:
    from vaelab.viz.report import build_report

    log = print if args.verbose else (lambda _m: None)
    return _written(build_report(args.run, args.out, args.method, args.n, log=log))


def cmd_compare(args: argparse.Namespace) -> int:
    from vaelab.viz.report import build_compare

    return _written(build_compare(args.run_a, args.run_b, args.out, args.method, args.n))


# vaelab.viz.analysis checks --method and --mode against EMBED_METHODS and
# INTERPOLATION_MODES when the command runs (it imports torch, --help must not); the
# help below names them, and tests/test_cli.py checks that it names each.
METHOD_HELP = "embedding: tsne or pca (default tsne)"
MODE_HELP = "linear or slerp (default linear)"


def _common(p: argparse.ArgumentParser, out_help: str = "folder for the PNGs") -> None:
    p.add_argument("run", metavar="RUN", help="a run directory written by vaelab train")
    p.add_argument("--out", default=None, metavar="DIR", help=f"{out_help} (default RUN/figures)")


def register(command) -> None:
    p = command("sample", cmd_sample, "decode z ~ p(z), the run's prior, into a grid of samples")
    _common(p)
    p.add_argument(
        "--n", type=int, default=None, help="how many samples (default 64; 10 per row with all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="scale of z's standard deviation (1)"
    )
    p.add_argument(
        "--label",
        type=label_arg,
        default=None,
        metavar="K|all",
        help="a conditional run: decode with label K, or all (the default there): one row "
        "per class",
    )

    p = command("relabel", cmd_relabel, "conditional runs: test images decoded with every label")
    _common(p)
    p.add_argument("--n", type=int, default=10, help="first N test images (default 10)")

    p = command("reconstruct", cmd_reconstruct, "test images above their reconstructions by epoch")
    _common(p)
    p.add_argument("--n", type=int, default=16, help="how many test images (default 16)")
    p.add_argument(
        "--epochs", type=int_list, default=None, metavar="LIST", help="cached epochs (default all)"
    )

    p = command("interpolate", cmd_interpolate, "decode a path between two test images' means")
    _common(p)
    p.add_argument("--a", type=int, default=None, metavar="I", help="test index of the start")
    p.add_argument("--b", type=int, default=None, metavar="J", help="test index of the end")
    p.add_argument(
        "--digits",
        type=int,
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="the first test images with these labels, e.g. --digits 3 8",
    )
    p.add_argument("--steps", type=int, default=10, help="images along the path (default 10)")
    p.add_argument("--mode", default="linear", help=MODE_HELP)

    p = command("embed", cmd_embed, "t-SNE or PCA of the cached test means, one panel per epoch")
    _common(p)
    p.add_argument(
        "--epochs", type=int_list, default=None, metavar="LIST", help="cached epochs (default all)"
    )
    p.add_argument("--method", default="tsne", help=METHOD_HELP)
    p.add_argument("--n", type=int, default=1000, help="first N test means (default 1000)")

    p = command("bubbles", cmd_bubbles, "posteriors as ellipses mu ± sigma, per epoch + a GIF")
    _common(p)
    p.add_argument(
        "--epochs", type=int_list, default=None, metavar="LIST", help="cached epochs (default all)"
    )
    p.add_argument("--n", type=int, default=1000, help="first N test points (default 1000)")

    p = command("manifold", cmd_manifold, "decoded grid over the latent plane")
    _common(p)
    p.add_argument("--grid", type=int, default=20, help="cells per side (default 20)")
    p.add_argument(
        "--label", type=int, default=None, metavar="K", help="a conditional run's label (0)"
    )

    p = command("traverse", cmd_traverse, "decode one latent dimension at a time, swept")
    _common(p)
    p.add_argument(
        "--dims",
        type=int_list,
        default=None,
        metavar="LIST",
        help="dimensions as numbered in the figures, 1..d, e.g. 1,4 (default all, at most 32)",
    )
    p.add_argument(
        "--range",
        type=float,
        default=3.0,
        help="sweep each dimension from base - R to base + R (default 3)",
    )
    p.add_argument("--steps", type=int, default=11, help="images per row (default 11)")
    p.add_argument(
        "--index",
        type=int,
        default=None,
        metavar="I",
        help="base code: test image I's posterior mean (default the prior mean)",
    )
    p.add_argument(
        "--label",
        type=int,
        default=None,
        metavar="K",
        help="a conditional run's label (default: test image I's own, else 0)",
    )

    p = command("report", cmd_report, "write RUN/report.html with every figure of the run")
    p.add_argument("run", metavar="RUN", help="a run directory written by vaelab train")
    p.add_argument("--out", default=None, metavar="FILE", help="the page (default RUN/report.html)")
    p.add_argument("--method", default="tsne", help=METHOD_HELP)
    p.add_argument("--n", type=int, default=1000, help="test means per embedding (default 1000)")
    p.add_argument("--verbose", action="store_true", help="print the time of each figure")

    p = command("compare", cmd_compare, "two runs side by side (e.g. AE vs VAE) in one page")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument(
        "--out", default=None, metavar="FILE", help="the page (default RUN_A/compare.html)"
    )
    p.add_argument("--method", default="tsne", help=METHOD_HELP)
    p.add_argument("--n", type=int, default=1000, help="test means per embedding (default 1000)")
