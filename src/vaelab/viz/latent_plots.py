"""Pictures of the latent space from arrays: embeddings of the test means, posterior
bubbles (and their GIF), the decoded manifold, traversals and the latent's use over
training. Drawing only, with the conventions of :mod:`vaelab.viz.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaelab.viz.plots import (
    _class_colourbar,
    _show,
    class_colours,
    new_figure,
    save_figure,
    tile,
    to_images,
)


def plot_embeddings(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    title: str,
    path: Path | str,
    axis_name: str = "t-SNE",
    class_names: Sequence[str] = (),
) -> Path:
    """One scatter panel per (panel title, xy (n, 2), labels (n,)), coloured by class with
    one colour map for all panels and a colour bar (lecture section 6.4)."""
    colours = class_colours(np.concatenate([p[2] for p in panels]), class_names)
    fig = new_figure((3.9 * len(panels) + 1.2, 4.1), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, xy, labels) in zip(axes[0], panels):
        if colours is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=5, c="0.3", linewidths=0)
        else:
            cmap, norm = colours[:2]
            ax.scatter(xy[:, 0], xy[:, 1], s=5, c=labels, cmap=cmap, norm=norm, linewidths=0)
        ax.set_title(name)
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.tick_params(labelsize=7)
    if colours is not None:
        _class_colourbar(fig, axes[0].tolist(), colours)
    fig.suptitle(_wrap(title, len(panels)))
    return save_figure(fig, path)


def _wrap(title: str, panels: int) -> str:
    """A figure title broken into lines that fit above ``panels`` panels."""
    import textwrap

    return "\n".join(textwrap.wrap(title, 45 * panels + 15))


def _bubble_limit(panels: Sequence[dict]) -> float:
    """A symmetric axis limit that shows (nearly) every bubble of every panel, >= 3."""
    reach = [np.abs(p["mu"]) + p["sigma"] for p in panels]
    return float(max(3.0, *(np.percentile(r, 99.5) * 1.05 for r in reach)))


def draw_bubbles(
    ax,
    data: dict,
    dims: Sequence[int],
    colours,
    limit: float,
    title: str,
    stochastic: bool,
    prior_points: np.ndarray | None = None,
) -> None:
    """Posterior ellipses mu +/- sigma of each point on ``ax`` (points for a plain AE),
    with the N(0, I) prior's 1- and 2-sigma circles dashed, or, for a learned prior,
    ``prior_points`` (n, 2), its samples in the two dimensions, as grey dots behind."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Circle

    mu, sigma, labels = data["mu"], data["sigma"], data["labels"]
    if colours is None:
        face = np.tile([0.3, 0.3, 0.3, 1.0], (len(mu), 1))
    else:
        face = colours[0](colours[1](labels))
    if stochastic:
        face[:, 3] = 0.18
        ax.add_collection(
            EllipseCollection(
                2 * sigma[:, 0],
                2 * sigma[:, 1],
                np.zeros(len(mu)),
                units="xy",
                offsets=mu,
                offset_transform=ax.transData,
                facecolors=face,
                edgecolors=face[:, :3] * 0.8,
                linewidths=0.2,
            )
        )
    ax.scatter(
        mu[:, 0], mu[:, 1], s=1.5 if stochastic else 4, c=face[:, :3], linewidths=0, zorder=3
    )
    if prior_points is not None:
        ax.scatter(*np.asarray(prior_points).T[:2], s=1, c="0.55", linewidths=0, zorder=1)
    else:
        for r in (1, 2):
            ax.add_patch(Circle((0, 0), r, fill=False, ls="--", lw=0.8, ec="0.2", zorder=4))
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xlabel(f"z{dims[0] + 1}")
    ax.set_ylabel(f"z{dims[-1] + 1}")
    ax.set_title(title, fontsize=10)


def plot_bubbles(
    panels: Sequence[tuple[str, dict]],
    dims: Sequence[int],
    title: str,
    path: Path | str,
    stochastic: bool = True,
    class_names: Sequence[str] = (),
    prior_points: np.ndarray | None = None,
) -> Path:
    """The lecture's bubbles: one panel per (panel title, bubbles dict) with shared axes
    (a learned prior's samples ``prior_points`` (n, 2) behind each, ``draw_bubbles``)."""
    colours = class_colours(np.concatenate([p[1]["labels"] for p in panels]), class_names)
    limit = _bubble_limit([p[1] for p in panels])
    fig = new_figure((3.9 * len(panels) + 1.2, 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels):
        draw_bubbles(ax, data, dims, colours, limit, name, stochastic, prior_points)
    if colours is not None:
        _class_colourbar(fig, axes[0].tolist(), colours)
    fig.suptitle(_wrap(title, len(panels)))
    return save_figure(fig, path)


def bubbles_gif(
    panels: Sequence[tuple[str, dict]],
    dims: Sequence[int],
    title: str,
    path: Path | str,
    stochastic: bool = True,
    class_names: Sequence[str] = (),
    seconds_per_frame: float = 1.2,
    prior_points: np.ndarray | None = None,
) -> Path:
    """The same panels as frames of an endless animated GIF (Pillow), same size each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # renders; selects nothing
    from PIL import Image

    colours = class_colours(np.concatenate([p[1]["labels"] for p in panels]), class_names)
    limit = _bubble_limit([p[1] for p in panels])
    frames = []
    for name, data in panels:
        fig = new_figure((5.6, 4.8), layout="constrained")
        ax = fig.subplots()
        draw_bubbles(ax, data, dims, colours, limit, name, stochastic, prior_points)
        if colours is not None:
            _class_colourbar(fig, [ax], colours)
        fig.suptitle(title, fontsize=10)
        fig.set_dpi(100)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    from vaelab.fileio import atomic_write

    path = Path(path)
    palette = [f.quantize(colors=255, method=Image.Quantize.MEDIANCUT) for f in frames]
    ms = int(seconds_per_frame * 1000)
    atomic_write(
        path,
        lambda f: palette[0].save(
            f, format="GIF", save_all=True, append_images=palette[1:], duration=ms, loop=0
        ),
    )
    return path


def _tick(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def plot_manifold(
    images: np.ndarray,
    input_shape: Sequence[int],
    u: np.ndarray,
    v: np.ndarray,
    dims: Sequence[int],
    title: str,
    path: Path | str,
) -> Path:
    """The decoded grid over two latent dimensions, ticks at the cells' z values."""
    grid = len(u)
    pics = to_images(images, input_shape)
    h, w = pics.shape[1:3]
    mosaic = tile(pics, grid, pad=0)
    size = min(9.0, max(4.0, 0.3 * grid + 1.5))
    fig = new_figure((size + 0.6, size + 0.4))
    ax = fig.subplots()
    ax.imshow(
        mosaic,
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0, grid * w, grid * h, 0),
    )
    step = max(1, grid // 8)
    cols = list(range(0, grid, step))
    ax.set_xticks([(c + 0.5) * w for c in cols], [_tick(u[c]) for c in cols], fontsize=8)
    rows = list(range(0, grid, step))  # row 0 at the top holds the largest v
    ax.set_yticks([(r + 0.5) * h for r in rows], [_tick(v[::-1][r]) for r in rows], fontsize=8)
    ax.set_xlabel(f"z{dims[0] + 1}")
    ax.set_ylabel(f"z{dims[-1] + 1}")
    ax.set_title(title)
    return save_figure(fig, path)


def _offset(value: float) -> str:
    """A column's offset: "-3", "0", "+1.5"."""
    return "0" if abs(value) < 1e-9 else f"{value:+.3g}".replace("-", "−")


def plot_traversal(
    images: np.ndarray,
    row_labels: Sequence[str],
    inactive: Sequence[bool],
    t: np.ndarray,
    input_shape: Sequence[int],
    title: str,
    path: Path | str,
    xlabel: str = "change of the dimension",
) -> Path:
    """One row per latent dimension (``images`` (rows, steps, D)), labelled on the left,
    the unused ones in grey; the columns' offsets ``t`` below."""
    rows, steps = images.shape[:2]
    pics = to_images(images.reshape(rows * steps, -1), input_shape)
    h, w = pics.shape[1:3]
    fig = new_figure((0.42 * steps + 2.6, 0.42 * rows + 1.2))
    ax = fig.subplots()
    _show(ax, tile(pics, steps))
    centre = lambda i, size: 1 + i * (size + 1) + (size - 1) / 2  # noqa: E731
    ax.set_yticks([centre(r, h) for r in range(rows)], row_labels, fontsize=8)
    for label, off in zip(ax.get_yticklabels(), inactive):
        label.set_color("0.6" if off else "0.1")
    cols = range(0, steps, max(1, (steps - 1) // 10))
    ax.set_xticks([centre(c, w) for c in cols], [_offset(t[c]) for c in cols], fontsize=7)
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_latent_use(
    use: dict,
    title: str,
    path: Path | str,
    metrics: Sequence[dict] = (),
    threshold: float = 0.01,
) -> Path:
    """Is the latent used, epoch by epoch? Left: each dimension's mean KL at the cached
    epochs (``use`` from ``dimensions.latent_use_by_epoch``), unused ones (last KL below
    ``threshold``) dashed grey. Right: total KL and I(x; z) (its ceiling log N dotted)
    with the active units on a second axis: markers at the cached epochs, lines through
    every epoch where ``metrics`` rows carry them."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    epochs, kl = use["epochs"], use["kl"]  # (E,), (E, d)
    d = kl.shape[1]
    fig = new_figure((12.0, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["viridis"]
    top = max(float(kl[-1].max()), 1e-9)
    order = np.argsort(-kl[-1], kind="stable")
    for j in order[::-1]:  # the most used drawn last, on top
        used = kl[-1, j] >= threshold
        colour = cmap(0.85 * (1 - kl[-1, j] / top)) if used else "0.6"
        left.plot(epochs, kl[:, j], "o-" if used else "o--", ms=3, lw=1.2, color=colour)
    spread = max(float(kl.max()), 1e-9) * 0.04
    names: list[tuple[float, list[str]]] = []  # labels for the top 5, merged when close
    for j in [j for j in order[: min(5, d)] if kl[-1, j] >= threshold]:
        if names and abs(names[-1][0] - kl[-1, j]) < spread:
            names[-1][1].append(f"z{j + 1}")
        else:
            names.append((float(kl[-1, j]), [f"z{j + 1}"]))
    for y, group in names:
        left.annotate(
            ", ".join(group),
            (epochs[-1], y),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
        )
    left.axhline(threshold, ls=":", lw=0.8, color="0.3")
    left.set_ylim(-0.01, max(left.get_ylim()[1], 0.1))  # collapsed dimensions look flat
    left.set_xlabel("epoch")
    left.set_ylabel("mean KL of the dimension (nats)")
    left.set_title(f"KL per dimension (grey dashed: below {threshold:g} nats, unused)", fontsize=10)
    units = right.twinx()
    rows = [m for m in metrics if m.get("test_mutual_information") is not None]
    series = {  # every epoch from metrics.jsonl where it has them, else the cached epochs
        "kl": ([m["epoch"] for m in rows], [m["test_kl"] for m in rows]),
        "mi": ([m["epoch"] for m in rows], [m["test_mutual_information"] for m in rows]),
        "au": ([m["epoch"] for m in rows], [m["test_active_units"] for m in rows]),
    }
    if not rows:
        series = {
            "kl": (epochs, kl.sum(1)),
            "mi": (epochs, use["mutual_information"]),
            "au": (epochs, use["active_units"]),
        }
    right.plot(*series["kl"], "-", color="C0", lw=1, label="KL, mean over test images")
    right.plot(epochs, kl.sum(1), "o", color="C0", ms=4)
    right.plot(*series["mi"], "-", color="C1", lw=1.4, label="I(x; z)")
    right.plot(epochs, use["mutual_information"], "s", color="C1", ms=4)
    ceiling = float(use["ceiling"])
    right.axhline(ceiling, ls=":", color="C1", lw=0.8, label=f"log N = {ceiling:.2f}: I's ceiling")
    units.plot(*series["au"], "-", color="C2", lw=1, drawstyle="steps-mid", label="active units")
    units.plot(epochs, use["active_units"], "^", color="C2", ms=4)
    right.set_xlabel("epoch")
    right.set_ylabel("nats")
    right.set_ylim(bottom=0)
    units.set_ylim(0, d + 0.5)
    units.yaxis.set_major_locator(MaxNLocator(integer=True))
    units.set_ylabel(f"active units (of {d})")
    handles = [h for a in (right, units) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (right, units) for lab in a.get_legend_handles_labels()[1]]
    right.legend(
        handles, labels, fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16)
    )
    right.set_title(
        "How much of the KL is information about x (markers: cached epochs)", fontsize=10
    )
    fig.suptitle(title)
    return save_figure(fig, path)
