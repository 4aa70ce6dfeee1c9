"""The ``>>>`` examples in the docstrings of the pure functions run, and give what they
show. The API reference (docs/api/) renders the same examples, so the documentation
cannot drift from the code. Each module must keep at least the examples it has now."""

from __future__ import annotations

import doctest
import importlib

import pytest

# module -> docstrings with examples in it (at least)
MODULES = {
    "vaelab.losses": 11,
    "vaelab.objectives": 1,
    "vaelab.config": 2,
    "vaelab.setting_values": 2,
    "vaelab.setting_spec": 1,
    "vaelab.errors": 1,
    "vaelab.data.datasets": 2,
    "vaelab.data.sources": 2,
    "vaelab.viz.analysis": 4,
    "vaelab.viz.dimensions": 1,
    "vaelab.viz.plots": 1,
    "vaelab.training.threads": 2,
    "vaelab.training.cpu": 1,
    "vaelab.training.calibrate": 2,
    "vaelab.models.priors": 3,
    "vaelab.presets": 1,
    "vaelab.training.schedules": 4,
    "vaelab.training.ema": 1,
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert len(tests) >= MODULES[name], [t.name for t in tests]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted >= MODULES[name]
