"""The CPU vaelab runs on: its description, its flags and the cores other work keeps busy."""

from __future__ import annotations

import os

import pytest

from vaelab.training import cpu

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma
"""


def test_the_cpu_description_is_the_first_model_name_and_its_flags():
    model, flags = cpu.cpu_description(CPUINFO)
    assert model == "AMD EPYC 7B13"
    assert flags == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert cpu.cpu_description("") == ("unknown", frozenset())


def test_only_avx512_bf16_or_amx_bf16_count_as_native_bfloat16():
    assert not cpu.native_bf16(frozenset({"avx2", "avx512f"}))
    assert cpu.native_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert cpu.native_bf16(frozenset({"amx_bf16"}))
    assert "slower than fp32" in cpu.bf16_note(frozenset({"avx2"}))
    assert cpu.bf16_note(frozenset({"amx_bf16"})) is None
    assert cpu.bf16_note(frozenset()) is None  # no flags listed: nothing is known


def test_this_process_may_use_at_least_one_core_and_can_sample_the_counters():
    assert 1 <= cpu.available_cores() <= (os.cpu_count() or 1)
    busy = cpu.measure_others(cpu.available_cores(), seconds=0.05)
    assert busy is None or 0.0 <= busy <= cpu.available_cores()


PROC_STAT = """cpu  500 0 100 1000 20 0 0 0 0 0
cpu0 300 0 50 400 10 0 0 0 0 0
cpu1 200 0 50 600 10 0 0 5 0 0
intr 12345
"""


def test_proc_stat_counts_busy_and_idle_ticks_of_the_cores_we_may_use():
    assert cpu.parse_proc_stat(PROC_STAT) == (300 + 50 + 200 + 50 + 5, 410 + 610)
    assert cpu.parse_proc_stat(PROC_STAT, {1}) == (255, 610)  # steal (5) counts as busy


def sample(busy: int, idle: int, own: float, wall: float) -> cpu.CpuSample:
    return cpu.CpuSample(busy, idle, own, wall)


def test_others_busy_is_the_busy_share_of_the_cores_less_this_process():
    start = sample(0, 0, 0.0, 0.0)
    # 2 cores, 0.5 s: 75 of 100 ticks busy = 1.5 cores, of which we used 0.5 s / 0.5 s
    assert cpu.others_busy(start, sample(75, 25, 0.5, 0.5), 2) == pytest.approx(0.5)
    assert cpu.others_busy(start, sample(100, 0, 1.0, 0.5), 2) == 0.0  # all ours
    assert cpu.others_busy(start, sample(40, 60, 0.0, 0.5), 2) == pytest.approx(0.8)
    assert cpu.others_busy(start, sample(0, 0, 0.0, 0.0), 2) == 0.0  # no time passed
