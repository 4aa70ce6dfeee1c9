"""CPU threads chosen by measurement (vaelab.training.threads, .calibrate): the busy-core
rule, the governor, the plan read from the calibration cache (its key and file:
test_calibration_cache.py), what the environment and the flags decide, and the bf16
note. conftest sets VAELAB_AUTO_THREADS=0 for the whole suite; the tests here that need
the automatic choice remove it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import assert_one_line_error, call_cli
from vaelab.errors import VaelabError
from vaelab.training import calibrate as C
from vaelab.training import calibration_cache, cpu
from vaelab.training import threads as T

LECTURE = {"dataset": "mnist", "epochs": 10}  # 2350 steps: long enough to calibrate
MEASURED = {"threads": 2, "spin": T.SPIN_HIGH, "seconds_per_step": {}}


@pytest.mark.parametrize(
    "cores, others, best, expected",
    [
        (2, 0.0, 2, 2),  # alone: the calibrated best
        (2, 0.3, 2, 2),  # a little background work: still both cores
        (2, 0.6, 2, 1),  # more: one thread, which waits for no one
        (2, 1.0, 2, 1),  # another run on one core
        (2, 2.0, 2, 1),  # everything busy: never fewer than one
        (2, 0.0, 1, 1),  # calibration found one thread fastest
        (16, 0.0, 8, 8),
        (16, 5.0, 16, 11),
    ],
)
def test_the_busy_core_rule(cores, others, best, expected):
    assert T.threads_for(cores, others, best) == expected


def test_the_governor_lowers_at_once_and_raises_only_after_calm_samples():
    g = T.ThreadGovernor(cores=2, best=2, start=2, raise_after=3)
    assert g.update(1.0) == 1  # another process took a core
    assert [g.update(0.0) for _ in range(3)] == [1, 1, 2]
    g.update(1.0)
    assert [g.update(x) for x in (0.0, 0.0, 0.9, 0.0, 0.0, 0.0)] == [1, 1, 1, 1, 1, 2]


def test_the_governor_follows_the_counters_and_the_loop_applies_its_count():
    """Counters in which another process takes a whole core: the governor's thread wants
    one thread within a few samples, and ``adjust`` gives torch that count."""
    clock = iter(range(10**6))

    def busy_neighbour() -> cpu.CpuSample:  # 2 cores all busy, we use one: others = 1
        t = next(clock)
        return cpu.CpuSample(busy=2 * t, idle=0, own_seconds=0.01 * t, wall_seconds=0.01 * t)

    before = torch.get_num_threads()
    plan = T.ThreadPlan(threads=2, best=2, spin=None, line="")
    with T.governed(plan, cores=2) as g:
        g.stop()  # the real one samples /proc/stat; this one uses the fake counters
        fake = T.ThreadGovernor(2, 2, 2, sample=busy_neighbour, period=0.001).start()
        T._governor = fake
        deadline = time.monotonic() + 60  # a loaded CI machine may starve the thread
        while fake.wanted != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        fake.stop()
        assert fake.wanted == 1
        T.adjust()
        assert torch.get_num_threads() == 1 and fake.changes == 1
        T.adjust()  # nothing new: no change
        assert fake.changes == 1
    assert T._governor is None and torch.get_num_threads() == before


def test_the_training_loop_applies_the_governors_count_between_steps(tiny, monkeypatch):
    from vaelab.config import TrainConfig
    from vaelab.models import build_model
    from vaelab.training.epoch import train_epoch
    from vaelab.training.optim import make_optimizer
    from vaelab.training.step import TrainStep

    config = TrainConfig(latent_dim=2, hidden=8, batch_size=64)
    model = build_model("vae", input_shape=tiny.input_shape, latent_dim=2, hidden=8)
    step = TrainStep(model, make_optimizer(model, config.lr), config, torch.device("cpu"))
    governor = T.ThreadGovernor(cores=2, best=2, start=2)  # not started: set by hand
    governor.wanted = 1
    monkeypatch.setattr(T, "_governor", governor)
    before = torch.get_num_threads()
    try:
        train_epoch(step, tiny.x_train.flatten(1), config, 1)
        assert torch.get_num_threads() == 1 and governor.applied == 1
    finally:
        torch.set_num_threads(before)


def test_a_resumed_run_is_planned_with_its_saved_shape(finished_cli_run):
    from vaelab.cli.train import run_settings

    settings = run_settings({"resume": str(finished_cli_run), "epochs": 3, "quiet": True})
    assert settings["latent_dim"] == 2 and settings["hidden"] == 8 and settings["epochs"] == 3
    assert calibration_cache.step_shape(settings)["dataset"].endswith("tiny.npz")


# -------------------------------------------------------------------------- the plan
class Calibrator:
    """A stand-in for the child processes: counts calls, returns ``result``."""

    def __init__(self, result: dict | None = MEASURED) -> None:
        self.calls, self.result = 0, result

    def __call__(self, settings, cores):
        self.calls += 1
        return self.result


@pytest.fixture
def two_cores(monkeypatch, tmp_path):
    monkeypatch.setattr(T, "available_cores", lambda: 2)
    return tmp_path / "threads.json"


def plan(cache, calibrator=None, env=None, others=0.0, settings=LECTURE, **kwargs):
    return T.plan_threads(
        settings, env=env or {}, calibrate=calibrator or Calibrator(), others=others,
        cache=cache, **kwargs,
    )  # fmt: skip


def test_auto_calibrates_once_then_reads_the_cache(two_cores):
    calibrator = Calibrator()
    first = plan(two_cores, calibrator)
    assert calibrator.calls == 1 and "calibrated now" in first.line
    assert (first.threads, first.best, first.spin) == (2, 2, T.SPIN_HIGH)
    again = plan(two_cores, calibrator)
    assert calibrator.calls == 1 and "cached" in again.line
    assert (again.threads, again.spin) == (2, T.SPIN_HIGH)
    other_shape = plan(two_cores, calibrator, settings={**LECTURE, "hidden": 1000})
    assert calibrator.calls == 2 and "calibrated now" in other_shape.line


def test_recalibrate_measures_again_and_replaces_the_cached_choice(two_cores):
    plan(two_cores, Calibrator())
    one_thread = Calibrator({"threads": 1, "spin": T.SPIN_LOW})
    again = plan(two_cores, one_thread, recalibrate=True)
    assert one_thread.calls == 1 and (again.threads, again.best) == (1, None)
    assert plan(two_cores, Calibrator()).threads == 1  # the new choice is cached


def test_a_cached_choice_of_fewer_threads_is_measured_again_by_the_next_run(two_cores):
    """A first calibration caught in a spell (one thread looked faster) is measured again
    by the next run; each setting keeps its faster time, and the merged choice is cached
    for good."""
    spell = Calibrator({"threads": 1, "spin": T.SPIN_LOW, "seconds_per_step": {
        "1 threads, spin 1000": 0.0061, "2 threads, spin 1000": 0.0073,
        "2 threads, spin 300000": 0.0063}})  # fmt: skip
    first = plan(two_cores, spell)
    assert spell.calls == 1 and (first.threads, first.best) == (1, None)
    quiet = Calibrator({"threads": 2, "spin": T.SPIN_HIGH, "seconds_per_step": {
        "1 threads, spin 1000": 0.0062, "2 threads, spin 1000": 0.0043,
        "2 threads, spin 300000": 0.0038}})  # fmt: skip
    second = plan(two_cores, quiet)
    assert quiet.calls == 1 and "calibrated again to confirm" in second.line
    assert (second.threads, second.best, second.spin) == (2, 2, T.SPIN_HIGH)
    third = plan(two_cores, quiet)
    assert quiet.calls == 1 and "calibrated, cached" in third.line and third.threads == 2


def test_fewer_threads_confirmed_by_a_second_run_or_chosen_by_recalibrate_stay(two_cores):
    one_thread = {"threads": 1, "spin": T.SPIN_LOW}
    calibrator = Calibrator(one_thread)
    plan(two_cores, calibrator), plan(two_cores, calibrator)  # measured, then confirmed
    assert plan(two_cores, calibrator).threads == 1 and calibrator.calls == 2
    plan(two_cores, calibrator, recalibrate=True)  # the user's own choice
    assert plan(two_cores, calibrator).threads == 1 and calibrator.calls == 3
    busy = Calibrator(one_thread)
    plan(two_cores, busy, settings={**LECTURE, "hidden": 100})
    plan(two_cores, busy, settings={**LECTURE, "hidden": 100}, others=1.0)  # not now
    assert busy.calls == 1


def test_busy_cores_at_start_mean_fewer_threads_and_no_calibration(two_cores):
    calibrator = Calibrator()
    busy = plan(two_cores, calibrator, others=1.7)
    assert calibrator.calls == 0 and "not calibrated: 1.7 cores busy" in busy.line
    assert (busy.threads, busy.best, busy.spin) == (1, 2, T.SPIN_LOW)  # the safe spin
    plan(two_cores, calibrator)  # later, on a quiet machine
    cached = plan(two_cores, calibrator, others=1.0)
    assert calibrator.calls == 1 and (cached.threads, cached.best) == (1, 2)


def test_short_runs_and_failed_calibrations_use_the_safe_defaults(two_cores):
    calibrator = Calibrator()
    short = plan(two_cores, calibrator, settings={"dataset": "mnist", "limit": 1000})
    assert calibrator.calls == 0 and "short run" in short.line
    assert (short.threads, short.spin) == (2, T.SPIN_LOW)
    failed = plan(two_cores, Calibrator(None))
    assert (failed.threads, failed.spin) == (2, T.SPIN_LOW)
    assert not two_cores.exists()  # nothing cached: measured next time


def test_a_run_on_a_gpu_keeps_torchs_default_threads_and_is_cached(two_cores):
    gpu = Calibrator({"device": "cuda", "threads": 2, "spin": T.SPIN_LOW})
    for _ in range(2):
        on_gpu = plan(two_cores, gpu)
        assert (on_gpu.threads, on_gpu.best) == (None, None) and "GPU" in on_gpu.line
    assert gpu.calls == 1


def test_an_explicit_environment_wins(two_cores):
    never = Calibrator()
    fixed = plan(two_cores, never, env={"OMP_NUM_THREADS": "1"}, threads=2)
    assert (fixed.threads, fixed.best) == (None, None) and "--threads 2 ignored" in fixed.line
    spin = plan(two_cores, Calibrator(), env={"GOMP_SPINCOUNT": "50000"})
    assert spin.spin is None and spin.threads == 2 and "GOMP_SPINCOUNT=50000" in spin.line
    env = {"GOMP_SPINCOUNT": "50000"}
    T.set_spin(spin, env)
    assert env == {"GOMP_SPINCOUNT": "50000"}
    policy = plan(two_cores, never, env={"OMP_WAIT_POLICY": "passive"})
    assert policy.spin is None and "cached" in policy.line  # the threads calibrated above
    off = plan(two_cores, never, env={T.AUTO_ENV: "0"})
    assert (off.threads, off.best, off.spin) == (None, None, T.SPIN_LOW)
    assert never.calls == 0


def test_threads_n_fixes_the_count_without_calibrating(two_cores):
    never = Calibrator()
    fixed = plan(two_cores, never, threads=3)
    assert (fixed.threads, fixed.best, fixed.spin) == (3, None, T.SPIN_LOW)
    assert never.calls == 0


@pytest.mark.parametrize("kwargs, env", [({"threads": 2}, {}), ({}, {"OMP_NUM_THREADS": "2"})])
def test_recalibrate_with_fixed_threads_is_an_error(two_cores, kwargs, env):
    with pytest.raises(VaelabError, match="--recalibrate"):
        plan(two_cores, env=env, recalibrate=True, **kwargs)


def test_the_calibration_choice_prefers_fewer_threads_and_the_short_spin():
    assert C.candidates(2) == [(1, T.SPIN_LOW), (2, T.SPIN_LOW), (2, T.SPIN_HIGH)]
    assert len(C.candidates(16)) == 1 + 2 * 4
    assert C.choose({(1, 1000): 1.0, (2, 1000): 0.7, (4, 1000): 0.69}) == (2, 1000)


class ScriptedChild:
    """A timing child whose step takes the seconds ``timing(threads, call)`` gives."""

    def __init__(self, timing, log):
        self.timing, self.log = timing, log

    def read(self, deadline):
        return "ready cpu"

    def ask(self, threads, steps, deadline):
        self.log.append(threads)
        return self.timing(threads, len(self.log))


def scripted_calibration(monkeypatch, timing):
    monkeypatch.setattr(C, "CONFIRM_PAUSE", 0.0)
    log: list[int] = []
    children = {spin: ScriptedChild(timing, log) for spin in (T.SPIN_LOW, T.SPIN_HIGH)}
    return C._calibrate(children, cores=2), log


def test_a_disturbed_window_is_measured_again_before_fewer_threads_are_cached(monkeypatch):
    # the first window's 2-thread steps are slowed (as on 2026-12-05), the second is quiet
    def timing(threads, call):
        if call == 1:
            return 0.006  # the first one-thread step, which sizes the windows
        return 0.006 if threads == 1 else (0.0073 if call <= 22 else 0.0040)

    entry, log = scripted_calibration(monkeypatch, timing)
    assert entry["windows"] == 2 and (entry["threads"], entry["spin"]) == (2, T.SPIN_LOW)
    assert entry["seconds_per_step"]["2 threads, spin 1000"] == 0.004
    assert len(log) == 1 + 2 * 3 * entry["rounds"]


def test_fewer_threads_stay_chosen_when_every_window_agrees(monkeypatch):
    entry, log = scripted_calibration(monkeypatch, lambda threads, call: 0.004 * threads)
    assert entry["windows"] == C.MAX_WINDOWS and entry["threads"] == 1
    assert len(log) == 1 + C.MAX_WINDOWS * 3 * entry["rounds"]


def test_a_window_far_over_its_budget_is_not_measured_again(monkeypatch):
    # threads collapsing under other processes' work: fewer threads are the right choice
    monkeypatch.setattr(C, "SLOW_WINDOW", 0.0)
    entry, _ = scripted_calibration(monkeypatch, lambda threads, call: 0.004 * threads)
    assert entry["windows"] == 1 and entry["threads"] == 1


def test_a_choice_of_every_core_needs_one_window(monkeypatch):
    entry, log = scripted_calibration(monkeypatch, lambda threads, call: 0.006 / threads)
    assert entry["windows"] == 1 and entry["threads"] == 2
    assert len(log) == 1 + 3 * entry["rounds"]


# ------------------------------------------------------------------- the command line
@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_bad_threads_exit_2(capsys, value):
    code, _, err = call_cli(capsys, "train", "--threads", value)
    assert_one_line_error(code, err, match="--threads")


@pytest.mark.parametrize(
    "args, match",
    [
        (["--threads", "2", "--recalibrate"], "--recalibrate"),
        (["--nproc", "2", "--threads", "1"], "--threads applies to one process"),
    ],
)
def test_thread_flags_that_cannot_apply_exit_2(capsys, args, match):
    code, _, err = call_cli(capsys, "train", "--epochs", "1", *args)
    assert_one_line_error(code, err, match=match)


def tiny_train(tiny_npz, out, *args: str) -> list[str]:
    return ["train", "--dataset", str(tiny_npz), "--epochs", "1", "--latent-dim", "2",
            "--hidden", "8", "--out", str(out), *args]  # fmt: skip


def test_threads_n_trains_with_n_threads(capsys, monkeypatch, tmp_path, tiny_npz):
    counts = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (counts.append(n), real(n)))
    before = torch.get_num_threads()
    code, out, err = call_cli(capsys, *tiny_train(tiny_npz, tmp_path / "run", "--threads", "1"))
    assert code == 0, err
    assert "threads: 1 (--threads)" in out
    assert counts == [1, before] and torch.get_num_threads() == before  # set, then restored


@pytest.mark.parametrize("flags, noted", [({"avx2"}, True), ({"avx2", "avx512_bf16"}, False)])
def test_bf16_on_a_cpu_without_native_bf16_says_so_in_one_line(
    capsys, monkeypatch, tmp_path, tiny_npz, flags, noted
):
    monkeypatch.setattr(cpu, "cpu_description", lambda: ("Some CPU", frozenset(flags)))
    argv = tiny_train(tiny_npz, tmp_path / "run", "--precision", "bf16", "--device", "cpu")
    code, _, err = call_cli(capsys, *argv, "--quiet")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "bfloat16" in line]
    assert len(notes) == (1 if noted else 0), err
    if noted:
        assert "no native bfloat16" in notes[0] and "slower" in notes[0]


@pytest.mark.skipif(
    T.available_cores() < 2, reason="one core allowed (taskset): one thread, nothing to calibrate"
)
def test_recalibrate_runs_the_real_step_in_child_processes(capsys, monkeypatch, tmp_path, tiny_npz):
    """The real calibration (two child processes timing the tiny model's step), cached in
    the user cache; the next run reads it and starts no child."""
    monkeypatch.delenv(T.AUTO_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = call_cli(capsys, *tiny_train(tiny_npz, tmp_path / "a", "--recalibrate"))
    assert code == 0, err
    assert "calibrating threads" in err and "calibrated now" in out
    (entry,) = json.loads((tmp_path / "cache" / "vaelab" / "threads.json").read_text()).values()
    assert entry["threads"] in C.thread_counts(T.available_cores())
    assert entry["spin"] in (T.SPIN_LOW, T.SPIN_HIGH) and entry["seconds_per_step"]

    def no_child(*_args):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(C, "calibrate", no_child)
    code, out, err = call_cli(capsys, *tiny_train(tiny_npz, tmp_path / "b"))
    assert code == 0, err
    assert "calibrated, cached" in out and f"best {entry['threads']}" in out


@pytest.mark.skipif(
    T.available_cores() < 2, reason="one core allowed (taskset): one thread, nothing to calibrate"
)
def test_a_time_budget_run_with_a_share_of_run_warm_up_calibrates(tiny_npz):
    """The `vamp` preset's kind of run (--time-budget, --kl-warmup 5%: no epochs to count
    the warm-up in) once made the timing children fail, and the run fell back to defaults."""
    settings = {"dataset": str(tiny_npz), "latent_dim": 2, "hidden": 8, "time_budget": 1.0,
                "epochs": None, "kl_warmup": "5%"}  # fmt: skip
    entry = C.calibrate(settings, 2)
    assert entry is not None and entry["threads"] in (1, 2) and entry["seconds_per_step"]


def test_the_command_sets_the_cached_spin_before_torch_loads(tmp_path):
    """A fresh process: the cached choice's spin is in the environment when torch loads
    (the command then fails at once: the run to resume does not exist)."""
    cache = tmp_path / "cache"
    cpu, flags = T.cpu_description()
    shape = calibration_cache.step_shape({})
    key = calibration_cache.cache_key(cpu, flags, T.available_cores(), T.torch_version(), shape)
    calibration_cache.store_calibration(
        cache / "vaelab" / "threads.json", key, {"threads": 1, "spin": 300000, "confirmed": True}
    )  # confirmed: else this run would measure the 1-thread choice again
    code = (
        "import os, sys, vaelab.cli\n"
        "assert vaelab.cli.main(['train', '--resume', sys.argv[1]]) == 2\n"
        "assert 'torch' in sys.modules\n"
        "print(os.environ['GOMP_SPINCOUNT'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*T.WAIT_ENV, T.AUTO_ENV)}
    env["XDG_CACHE_HOME"] = str(cache)
    argv = [sys.executable, "-c", code, str(tmp_path / "no-run")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "calibrated, cached" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "300000"
