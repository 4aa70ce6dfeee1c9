"""The optimiser: Adam (Kingma & Ba 2015), the lecture's, with torch's fused kernel."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` whose ``step`` calls the fused kernel
    (``torch._fused_adam_``) directly when nothing else is asked of it.

    Per step, with g the gradient, t the step count and lr the learning rate:
    m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
    p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

    The kernel, its arguments and the state are torch's own, so the weights are bit for bit
    those of ``torch.optim.Adam(fused=True)`` and checkpoints move between the two. What is
    skipped is the generic ``Optimizer.step`` machinery (hooks, profiler records, grouping
    tensors by device and dtype): about 70 us of the 230 us an Adam step of the lecture's
    636k weights takes on a 2-core CPU, 3-4% of a bf16 training step (docs/benchmarks.md).
    Anything this shortcut does not cover (a closure, hooks, several parameter groups,
    missing gradients, the first step that creates the state, amsgrad, a GPU) goes through
    ``torch.optim.Adam.step`` unchanged."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)

    def _direct(self) -> list[torch.Tensor] | None:
        """The parameters when the direct kernel call applies, else None."""
        if len(self.param_groups) != 1 or self._optimizer_step_pre_hooks:
            return None
        if self._optimizer_step_post_hooks or _global_optimizer_pre_hooks:
            return None
        if _global_optimizer_post_hooks:
            return None
        group = self.param_groups[0]
        if group["amsgrad"] or group["differentiable"] or group["capturable"]:
            return None
        params = group["params"]
        for p in params:
            if p.grad is None or p.grad.is_sparse or p not in self.state:
                return None
            if p.device.type != "cpu" or p.dtype != params[0].dtype:
                return None
        return params

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's docstring)
        params = self._direct() if closure is None else None
        if params is None:
            return super().step(closure)
        group = self.param_groups[0]
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
        beta1, beta2 = group["betas"]
        kernel(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            grad_scale=None,
            found_inf=None,
        )
        return None

    # torch wraps an optimiser's step in its hook-and-profiler layer unless it is marked as
    # wrapped; this one runs the hooks itself (through torch's step when there are any).
    step.hooked = True  # type: ignore[attr-defined]


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel (one pass over all parameters, ~15% of a CPU epoch of the
    lecture's model saved: docs/benchmarks.md), called directly (``FusedAdam``), or the
    default Adam where this PyTorch or device has no fused one. All keep the same state, so
    checkpoints move between them.

    Under --precision bf16 it still steps the float32 weights: autocast casts them for
    the matmuls. (A bfloat16 copy of the weights with these as master weights, which saves
    those casts, was no faster here: docs/benchmarks.md.)"""
    try:
        return FusedAdam(model.parameters(), lr=lr)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)
