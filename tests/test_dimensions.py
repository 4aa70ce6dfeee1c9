"""dimensions: traversals of one latent dimension at a time, how much each dimension is
used (KL or code variance) and how that use changes over the cached epochs."""

import numpy as np
import pytest
from torch import nn

from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.viz import dimensions


class Identity3(nn.Module):
    """decode(z) = z: shows exactly which z a traversal decoded."""

    latent_dim = 3

    def decode(self, z):
        return z


def test_traversal_sweeps_one_dimension_at_a_time_around_the_base():
    base = np.array([0.5, -1.0, 2.0])
    out = dimensions.traversal(Identity3(), base, [2, 0], span=2.0, steps=5)
    assert out["images"].shape == (2, 5, 3)
    np.testing.assert_allclose(out["t"], [-2, -1, 0, 1, 2])
    np.testing.assert_allclose(out["images"][0, :, 2], 2.0 + out["t"])  # first row: z3
    np.testing.assert_allclose(out["images"][1, :, 0], 0.5 + out["t"])  # second row: z1
    np.testing.assert_allclose(out["images"][0, :, :2], np.tile([0.5, -1.0], (5, 1)))
    np.testing.assert_allclose(out["images"][:, 2], np.tile(base, (2, 1)))  # middle = base
    scaled = dimensions.traversal(Identity3(), base, [1], 1.0, 3, scale=np.array([1, 4.0, 1]))
    np.testing.assert_allclose(scaled["images"][0, :, 1], [-5.0, -1.0, 3.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 1}, "steps must be at least 2"),
        ({"span": 0.0}, "range must be a positive number"),
        ({"span": float("nan")}, "range must be a positive number"),
        ({"dims": [3]}, r"dims must name latent dimensions in 0..2"),
        ({"dims": []}, "dims must name"),
    ],
)
def test_bad_traversals_are_one_line_errors(kwargs, match):
    args = {"dims": [0], "span": 3.0, "steps": 5, **kwargs}
    with pytest.raises(VaelabError, match=match):
        dimensions.traversal(Identity3(), np.zeros(3), **args)


def test_dimension_use_is_the_models_kl_or_the_codes_variance():
    model = build_model("vae", input_shape=(4,), latent_dim=2, hidden=3)
    mu = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    logvar = np.zeros_like(mu)
    use, what = dimensions.dimension_use(model, {"mu": mu, "logvar": logvar})
    np.testing.assert_allclose(use, [0.5, 0.0])  # 0.5 mu^2 at unit variance
    assert what == "KL"
    use, what = dimensions.dimension_use(model, {"mu": mu, "logvar": np.full_like(mu, -np.inf)})
    np.testing.assert_allclose(use, [1.0, 0.0])
    assert what == "variance"


def test_latent_use_by_epoch_tracks_kl_active_units_and_information():
    model = build_model("vae", input_shape=(4,), latent_dim=2, hidden=3)
    rng = np.random.default_rng(0)
    collapsed = {"mu": np.zeros((300, 2), np.float32), "logvar": np.zeros((300, 2), np.float32)}
    used = {  # dimension 1 carries x, dimension 2 is the prior
        "mu": np.stack([rng.normal(0, 2, 300), np.zeros(300)], 1).astype(np.float32),
        "logvar": np.stack([np.full(300, -2.0), np.zeros(300)], 1).astype(np.float32),
    }
    use = dimensions.latent_use_by_epoch(model, {0: collapsed, 3: used}, points=200)
    assert use["epochs"].tolist() == [0, 3] and use["kl"].shape == (2, 2)
    assert use["active_units"].tolist() == [0, 1]
    assert abs(use["mutual_information"][0]) < 1e-9 and use["mutual_information"][1] > 1.0
    assert use["mutual_information"][1] <= use["ceiling"] == pytest.approx(np.log(200))
    assert use["kl"][0].tolist() == [0.0, 0.0] and use["kl"][1, 1] == 0.0
