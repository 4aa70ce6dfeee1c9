"""vaelab: variational autoencoders made trainable, measurable and visible.

>>> import vaelab
>>> run = vaelab.load_run("runs/demo")          # doctest: +SKIP
>>> mu, logvar = run.model.encode(x)            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from vaelab.config import TrainConfig  # noqa: E402
from vaelab.data import Dataset, load_dataset  # noqa: E402
from vaelab.errors import VaelabError  # noqa: E402
from vaelab.run import Run, load_run  # noqa: E402


def train(*args, **kwargs):
    """See :func:`vaelab.train.train` (imported lazily)."""
    from vaelab.train import train as _train

    return _train(*args, **kwargs)


__all__ = [
    "Dataset",
    "Run",
    "TrainConfig",
    "VaelabError",
    "load_dataset",
    "load_run",
    "train",
    "__version__",
]
