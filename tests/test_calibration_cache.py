"""The calibration cache of --threads auto (vaelab.training.calibration_cache): the key
names everything a step's speed depends on and nothing else; the file survives damage."""

from __future__ import annotations

import json

from vaelab.training import calibration_cache as cache
from vaelab.training.threads import SPIN_HIGH, SPIN_LOW

MEASURED = {"threads": 2, "spin": SPIN_HIGH, "seconds_per_step": {}}


# ----------------------------------------------------------------------- the cache key
def key(**changes) -> str:
    parts = {
        "cpu": "AMD EPYC",
        "flags": frozenset({"avx2", "fma"}),
        "cores": 2,
        "torch": "2.13.0+cpu",
        "shape": cache.step_shape({}),
    }
    return cache.cache_key(**{**parts, **changes})


def test_the_cache_key_names_cpu_flags_cores_torch_and_model_shape():
    assert key() == key()
    changed = [
        key(cpu="Intel Xeon"),
        key(flags=frozenset({"avx2", "fma", "avx512_bf16"})),  # same name, another host
        key(cores=16),
        key(torch="2.14.0+cpu"),
        key(shape=cache.step_shape({"hidden": 1000})),
        key(shape=cache.step_shape({"batch_size": 128})),
        key(shape=cache.step_shape({"precision": "bf16"})),
    ]
    assert len({key(), *changed}) == len(changed) + 1


def test_the_shape_fills_in_the_defaults_and_ignores_what_costs_nothing():
    lecture = cache.step_shape({})
    assert lecture["hidden"] == 400 and lecture["batch_size"] == 256
    assert cache.step_shape({"latent_dim": 20, "hidden": 400}) == lecture
    assert cache.step_shape({"epochs": 3, "seed": 7, "lr": 0.01, "out": "x"}) == lecture
    assert cache.step_shape({"latent_dim": 2})["hidden"] == 4


def test_a_new_calibration_method_invalidates_the_cache(monkeypatch):
    old = key()
    monkeypatch.setattr(cache, "CALIBRATION_VERSION", cache.CALIBRATION_VERSION + 1)
    assert key() != old


def test_the_cache_stores_reads_replaces_and_survives_damage(tmp_path):
    path = tmp_path / "vaelab" / "threads.json"
    assert cache.cached_calibration(path, "k1") is None
    cache.store_calibration(path, "k1", MEASURED)
    cache.store_calibration(path, "k2", {**MEASURED, "threads": 1})
    assert cache.cached_calibration(path, "k1")["threads"] == 2
    cache.store_calibration(path, "k1", {**MEASURED, "spin": SPIN_LOW})  # --recalibrate
    assert cache.cached_calibration(path, "k1")["spin"] == SPIN_LOW
    assert cache.cached_calibration(path, "k2")["threads"] == 1
    path.write_text("{not json")
    assert cache.cached_calibration(path, "k1") is None  # measured again
    path.write_text(json.dumps({"k1": {"threads": "two"}}))
    assert cache.cached_calibration(path, "k1") is None
