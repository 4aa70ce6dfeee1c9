"""plots: every figure is written, has the size its content needs, and keeps digits sharp."""

import numpy as np
import pytest
from PIL import Image

from vaelab.viz import latent_plots, plots

RNG = np.random.default_rng(0)


def size(path):
    with Image.open(path) as im:
        return im.size


def test_tile_lays_out_images_with_gaps():
    images = np.zeros((5, 3, 2))
    mosaic = plots.tile(images, ncol=2)
    assert mosaic.shape == (3 * 4 + 1, 2 * 3 + 1)
    assert mosaic[0].min() == 1 and mosaic[1, 1] == 0


def test_grid_shows_every_pixel(tmp_path):
    path = plots.plot_grid(RNG.random((64, 784)), (1, 28, 28), "samples", tmp_path / "g.png", 8)
    w, h = size(path)
    assert w >= 8 * 28 and h >= 8 * 28  # never down-sampled: each digit pixel visible


def test_embeddings_one_panel_per_epoch_with_a_colour_bar(tmp_path):
    panels = [(f"epoch {e}", RNG.normal(size=(100, 2)), RNG.integers(0, 10, 100)) for e in (0, 5)]
    one = latent_plots.plot_embeddings(
        panels[:1], "t", tmp_path / "one.png", class_names="0123456789"
    )
    two = latent_plots.plot_embeddings(panels, "t", tmp_path / "two.png")
    assert size(two)[0] > size(one)[0] + 300  # a second panel
    assert 350 < size(two)[1] < 700


def test_embedding_colours_are_shared_across_panels():
    cmap, norm, ticks, names = plots.class_colours(np.array([0, 3, 9]), ())
    assert ticks == list(range(10)) and names[9] == "9"
    assert cmap(norm(3)) != cmap(norm(4))
    assert plots.class_colours(np.array([-1, -1]), ()) is None


def _bubbles(n=50, sigma=0.5):
    return {
        "mu": RNG.normal(size=(n, 2)).astype(np.float32),
        "sigma": np.full((n, 2), sigma, np.float32),
        "labels": RNG.integers(0, 10, n),
    }


def test_bubbles_panels_and_gif(tmp_path):
    panels = [("epoch 0", _bubbles()), ("epoch 1", _bubbles()), ("epoch 2", _bubbles())]
    png = latent_plots.plot_bubbles(panels, [0, 1], "bubbles", tmp_path / "b.png")
    assert size(png)[0] > 3 * 300
    gif = latent_plots.bubbles_gif(panels, [0, 1], "bubbles", tmp_path / "b.gif")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.size == (560, 480)
        assert im.info["loop"] == 0 and im.info["duration"] > 0


def test_bubble_axes_fit_the_widest_epoch():
    small = _bubbles(sigma=0.1)
    small["mu"] *= 0.1
    assert latent_plots._bubble_limit([small]) == 3.0
    wide = _bubbles(sigma=5.0)
    assert latent_plots._bubble_limit([_bubbles(), wide]) > 5.0


def test_ae_codes_are_drawn_as_points(tmp_path):
    data = _bubbles(sigma=0.0)
    path = latent_plots.plot_bubbles(
        [("e", data)], [0, 1], "codes", tmp_path / "p.png", stochastic=False
    )
    assert path.is_file()


def test_manifold_keeps_every_pixel(tmp_path):
    grid = 10
    u = v = np.linspace(-1.5, 1.5, grid)
    path = latent_plots.plot_manifold(
        RNG.random((grid * grid, 784)), (1, 28, 28), u, v, [0, 1], "m", tmp_path / "m.png"
    )
    w, h = size(path)
    assert w >= grid * 28 and h >= grid * 28


def test_losses_and_kl_per_dim(tmp_path):
    metrics = [
        {"epoch": 0, "test_loss": 540.0, "test_recon": 539.0, "test_kl": 1.0},
        *(
            {
                "epoch": e,
                **{f"{s}_{k}": 100.0 / e + 1 for s in ("train", "test") for k in ("loss", "recon")},
                "train_kl": 20.0,
                "test_kl": 21.0,
            }
            for e in (1, 2, 3)
        ),
    ]
    losses = plots.plot_losses([("run", metrics)], "losses", tmp_path / "l.png")
    assert size(losses)[0] > 1000
    kl = plots.plot_kl_per_dim(np.linspace(0, 3, 20), "kl", tmp_path / "k.png")
    assert size(kl)[0] > 500


@pytest.mark.parametrize(
    "shape,out",
    [((1, 8, 8), (8, 8)), ((3, 8, 6), (8, 6, 3)), ((4, 8, 6), (8, 6, 3)), ((2, 8, 6), (8, 6)),
     ((8, 6), (8, 6)), ((50,), (8, 8)), ((2, 3, 4, 5), (11, 11))],
)  # fmt: skip
def test_to_images_handles_grey_colour_and_flat(shape, out):
    flat = RNG.random((4, int(np.prod(shape))))
    images = plots.to_images(flat, shape)
    assert images.shape == (4, *out) and images.dtype == np.float32
    x = flat.reshape(4, *shape)
    if len(shape) == 3 and shape[0] >= 3:  # colour from the first three channels (RGB, RGBA)
        np.testing.assert_allclose(images, x[:, :3].transpose(0, 2, 3, 1), rtol=1e-6)
    elif len(shape) == 3:  # one or two channels: the first in grey
        np.testing.assert_allclose(images, x[:, 0], rtol=1e-6)
    else:  # (H, W) as it is; flat rows padded with zeros to a square
        np.testing.assert_allclose(images.reshape(4, -1)[:, : flat.shape[1]], flat, rtol=1e-6)


def test_to_images_clips_to_the_unit_range_and_draws_nan_black():
    images = plots.to_images(np.array([[np.nan, -0.5, 0.25, 1.5]]), (1, 2, 2))
    np.testing.assert_array_equal(images, [[[0.0, 0.0], [0.25, 1.0]]])


# ------------------------------------------------- matplotlib: a library, not a backend

BACKEND_CHECK = """
import sys, warnings
import matplotlib
{pyplot}matplotlib.use({backend!r})
before = matplotlib.get_backend()
import numpy as np
import vaelab.viz.analysis, vaelab.viz.figures, vaelab.viz.plots, vaelab.viz.report, vaelab.evaluation.sweep
import vaelab.viz.embeddings, vaelab.viz.latent_plots
import vaelab.server.explorer, vaelab.server.images
from vaelab.viz import latent_plots, plots
warnings.simplefilter("error")  # e.g. "More than 20 figures have been opened"
for i in range(25):
    plots.plot_grid(np.random.rand(4, 64), (1, 8, 8), "g", sys.argv[1] + f"/g{{i}}.png")
panels = [("e", dict(mu=np.zeros((3, 2)), sigma=np.ones((3, 2)), labels=np.arange(3)))]
latent_plots.bubbles_gif(panels, [0, 1], "b", sys.argv[1] + "/b.gif")
fig = plots.new_figure((2, 2))
fig.subplots().plot([0, 1])
print(before, matplotlib.get_backend(), type(fig).__module__, type(fig).__name__, sep="|")
if "matplotlib.pyplot" in sys.modules:
    print("open pyplot figures:", sys.modules["matplotlib.pyplot"].get_fignums())
"""


@pytest.mark.parametrize("pyplot_first", [False, True])
@pytest.mark.parametrize("backend", ["svg", "pdf"])
def test_vaelab_leaves_the_users_backend_alone(tmp_path, backend, pyplot_first):
    """A user (a notebook: inline) picks a backend first; importing vaelab and drawing
    with it keeps that backend, opens no pyplot figure and warns about nothing."""
    import subprocess
    import sys

    pyplot = "import matplotlib.pyplot as plt\n" if pyplot_first else ""
    code = BACKEND_CHECK.format(pyplot=pyplot, backend=backend)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    before, after, module, name = lines[0].split("|")
    assert before == after == backend
    assert (module, name) == ("matplotlib.figure", "Figure")  # what a notebook displays
    if pyplot_first:
        assert lines[1] == "open pyplot figures: []"
    else:
        assert len(lines) == 1  # vaelab never imported pyplot
    assert len(list(tmp_path.glob("g*.png"))) == 25 and (tmp_path / "b.gif").is_file()


def test_figures_are_plain_figures_that_a_notebook_can_render(tmp_path):
    import io

    from matplotlib.figure import Figure

    fig = plots.new_figure((3.0, 2.0), layout="constrained")
    assert isinstance(fig, Figure) and fig.get_layout_engine() is not None
    fig.subplots().imshow(np.eye(4), cmap="gray")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # what IPython's inline display does with a Figure
    assert buffer.getvalue().startswith(b"\x89PNG")
    path = plots.save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_save_figure_still_closes_a_pyplot_figure(tmp_path):
    """The notebook draws some figures with pyplot and saves them with save_figure: they
    must not stay open (shown a second time by the inline backend, or leaked)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert plt.fignum_exists(fig.number)
    plots.save_figure(fig, tmp_path / "p.png")
    assert not plt.fignum_exists(fig.number) and (tmp_path / "p.png").is_file()
