"""The GPU path: the same numbers on a CUDA device as on the CPU. Skipped without a GPU
(CI has none); benchmarks/gpu.sh runs them on a lent GPU machine."""

import math

import pytest
import torch

from vaelab.config import TrainConfig
from vaelab.evaluation.bounds import iwae_estimate
from vaelab.models import build_model
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.loop import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
QUIET = {"progress": False, "log": lambda _m: None}


def settings(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32, "epochs": 2}
    return TrainConfig(**{**base, **kw})


def last_test_loss(root) -> float:
    return read_metrics(RunPaths(root).metrics)[-1]["test_loss"]


def test_a_run_on_the_gpu_matches_the_cpu(tiny, tmp_path):
    cpu = train(settings(device="cpu"), out=tmp_path / "cpu", data=tiny, **QUIET)
    gpu = train(settings(device="cuda"), out=tmp_path / "gpu", data=tiny, **QUIET)
    assert last_test_loss(gpu) == pytest.approx(last_test_loss(cpu), rel=0.02)
    assert load_run(gpu).model.decoder[0].weight.device.type == "cpu"  # loads anywhere


@pytest.mark.parametrize("flags", [{"compile": True}, {"precision": "bf16"}])
def test_compiled_and_bf16_steps_on_the_gpu(tiny, tmp_path, flags):
    plain = train(settings(device="cuda"), out=tmp_path / "plain", data=tiny, **QUIET)
    fast = train(settings(device="cuda", **flags), out=tmp_path / "fast", data=tiny, **QUIET)
    assert last_test_loss(fast) == pytest.approx(last_test_loss(plain), rel=0.02)


def test_resume_on_the_gpu_is_exact(tiny, tmp_path):
    full = train(settings(device="cuda", epochs=3), out=tmp_path / "full", data=tiny, **QUIET)
    part = train(settings(device="cuda", epochs=1), out=tmp_path / "part", data=tiny, **QUIET)
    train(resume=part, epochs=3, data=tiny, **QUIET)
    a, b = load_run(full).model.state_dict(), load_run(part).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_iwae_estimate_on_the_gpu_matches_the_cpu():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(20,), latent_dim=3, hidden=8)
    x = torch.rand(50, 20).bernoulli()
    cpu = iwae_estimate(model, x, 500, generator=torch.Generator().manual_seed(0))["nll_iwae"]
    model.cuda()
    g = torch.Generator("cuda").manual_seed(0)
    gpu = iwae_estimate(model, x, 500, generator=g)["nll_iwae"]
    assert math.isclose(float(gpu.mean()), float(cpu.mean()), rel_tol=0.01)
