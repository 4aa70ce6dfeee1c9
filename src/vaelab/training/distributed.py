"""Data-parallel training on several processes with torch.distributed (DDP).

``torchrun --nproc-per-node N -m vaelab train ...`` (or ``vaelab train --nproc N``, which
starts the same launcher) runs N copies of the trainer. torchrun tells each its place in
the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); ``World`` reads
it. The trainer then:

- splits every global batch of the shared per-epoch permutation into N consecutive
  slices, one per rank (``rank_slice``), so N processes see the batches one process sees;
- sums its loss over its slice and multiplies by N, because DDP *averages* gradients
  over ranks: mean_r (N * sum_{slice r}) = sum over the global batch, the lecture's loss;
- lets rank 0 alone write files; every rank reads checkpoints when resuming.

The backend is NCCL on GPUs and gloo on CPUs. A rank that fails ends the job: torchrun
stops the others, and ``launch`` turns that into a RankFailedError: one line and the failed
rank's exit code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vaelab.errors import RankFailedError, VaelabError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The World torchrun describes in the environment; a single process without it."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return World()
    return World(rank, size, local_rank) if size > 1 else World()


def init_process_group(world: World, device: torch.device) -> None:
    """Join the job's process group (NCCL for CUDA devices, gloo otherwise); no-op alone."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_slice(batch: Tensor, world: World) -> Tensor:
    """This rank's part of a global batch: the rank-th of ``world.size`` consecutive slices
    whose sizes differ by at most one (a slice may be empty when the batch is smaller)."""
    if not world.distributed:
        return batch
    return torch.tensor_split(batch, world.size)[world.rank]


def sum_over_ranks(t: Tensor, world: World) -> Tensor:
    """The elementwise sum of ``t`` over all ranks, in place, returned."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True when ``flag`` is true on some rank: every rank gets the same answer, so all of
    them stop (or go on) at the same step."""
    if not world.distributed:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: Any, world: World) -> list[Any]:
    """``obj`` of every rank, in rank order (a list of one when alone)."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says that another rank went away (so it is not this rank's bug)."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


def failpoint(world: World) -> None:
    """``VAELAB_FAILPOINT_FAIL_RANK=R`` makes rank R fail before its first step: how the
    tests check that one failed rank ends the whole job."""
    if os.environ.get("VAELAB_FAILPOINT_FAIL_RANK") == str(world.rank) and world.distributed:
        raise VaelabError(f"rank {world.rank} failed on purpose (VAELAB_FAILPOINT_FAIL_RANK)")


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each launched process gets)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m vaelab ARGV`` in ``nproc`` processes on this machine, exactly as
    ``torchrun --standalone --nproc-per-node NPROC -m vaelab ARGV`` does; returns the exit
    code (0, or 128 + the signal that stopped the ranks). A failed rank raises
    RankFailedError, which names it and carries its exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun would set 1 and print a warning; share the cores out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "vaelab", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # the earliest: the cause, not the echo
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise RankFailedError(
            f"rank {rank} of {nproc} {how}; the other ranks were stopped (its own error is above)",
            exit_code=code if code > 0 else 1,
        ) from None
    except SignalException as exc:  # SIGINT/SIGTERM: the ranks stopped cleanly and said so
        return 128 + int(exc.sigval)
    return 0
