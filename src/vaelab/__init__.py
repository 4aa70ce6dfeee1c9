"""vaelab: variational autoencoders made trainable, measurable and visible.

>>> import vaelab
>>> run = vaelab.load_run("runs/demo")          # doctest: +SKIP
>>> mu, logvar = run.model.encode(x)            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

# The public names load on first use (PEP 562), so that ``import vaelab`` and
# ``vaelab --help`` do not pay for importing torch.
_LAZY = {
    "TrainConfig": "vaelab.config",
    "Dataset": "vaelab.data.datasets",
    "load_dataset": "vaelab.data.datasets",
    "VaelabError": "vaelab.errors",
    "Run": "vaelab.run",
    "load_run": "vaelab.run",
    "train": "vaelab.training.loop",
    "evaluate_run": "vaelab.evaluation.evaluate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


__all__ = [
    "Dataset",
    "Run",
    "TrainConfig",
    "VaelabError",
    "evaluate_run",
    "load_dataset",
    "load_run",
    "train",
    "__version__",
]
