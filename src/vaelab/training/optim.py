"""The optimiser: Adam (Kingma & Ba 2015), the lecture's, stepped by torch's fused kernel."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

# What torch.optim.Adam(lr=lr, fused=True) keeps in a parameter group, besides its params
# (eps: the default; --adam-eps replaces it).
ADAM_GROUP = {
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}


class FusedAdam:
    """Adam over float32 CPU parameters, one ``torch._fused_adam_`` call per step.

    Per step, with g the gradient, t the step count and lr the learning rate:
    m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
    p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

    The kernel, its arguments, the state and ``state_dict`` are those of
    ``torch.optim.Adam(lr=lr, fused=True)``: the weights are bit for bit the same and
    checkpoints move between the two. Why not torch's class itself: constructing any
    ``torch.optim`` optimiser imports torch's compiler (``torch._dynamo``, 0.9-1.2 s of
    every run's start), and its generic ``step`` (hooks, profiler records, grouping
    tensors by device and dtype) costs about 70 us of the 230 us an Adam step of the
    lecture's 636k weights takes on a 2-core CPU (docs/benchmarks.md). ``make_optimizer``
    uses torch's Adam wherever this class does not apply (a GPU, other dtypes)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, eps: float = 1e-8) -> None:
        self.params = list(params)
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in self.params):
            raise ValueError("FusedAdam steps float32 CPU parameters only")
        self.param_groups = [{"lr": lr, **ADAM_GROUP, "eps": eps, "params": self.params}]
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter that has a gradient (as torch's Adam)."""
        group = self.param_groups[0]
        params, grads, states = [], [], []
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            if not state:  # as torch's Adam creates it on a parameter's first step
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
        if not params:
            return
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            params,
            grads,
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

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: state by parameter index, one group of indices."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {
            "state": {i: dict(s) for i, s in enumerate(self.state) if s},
            "param_groups": [{**group, "params": list(range(len(self.params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state of this class or of torch.optim.Adam (fused or not); ValueError
        when it belongs to other parameters."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("the optimizer state is for another set of parameters")
        index = {saved: i for i, saved in enumerate(groups[0]["params"])}
        unsupported = [k for k in ("amsgrad", "maximize", "weight_decay") if groups[0].get(k)]
        if unsupported:
            raise ValueError(
                f"the optimizer state uses Adam options vaelab does not: {unsupported}"
            )
        state: list[dict[str, Tensor]] = [{} for _ in self.params]
        for saved, values in state_dict["state"].items():
            p = self.params[index[saved]]
            for key in ("exp_avg", "exp_avg_sq"):
                if values[key].shape != p.shape:
                    raise ValueError(
                        f"optimizer state of shape {tuple(values[key].shape)} for a parameter "
                        f"of shape {tuple(p.shape)}"
                    )
            state[index[saved]] = {
                "step": values["step"].detach().to(torch.float32).clone().reshape(()),
                "exp_avg": values["exp_avg"].detach().to(p.dtype).clone(),
                "exp_avg_sq": values["exp_avg_sq"].detach().to(p.dtype).clone(),
            }
        self.state = state
        for key in ("lr", "betas", "eps"):
            if key in groups[0]:
                self.param_groups[0][key] = groups[0][key]


Optimizer = torch.optim.Optimizer | FusedAdam


def make_optimizer(model: nn.Module, lr: float, eps: float = 1e-8) -> Optimizer:
    """Adam with torch's fused kernel (one pass over all parameters, ~15% of a CPU epoch of
    the lecture's model saved: docs/benchmarks.md): ``FusedAdam`` for float32 CPU weights,
    else ``torch.optim.Adam(fused=True)``, else the default Adam where this PyTorch or
    device has no fused one. All keep the same state, so checkpoints move between them.

    Under --precision bf16 it still steps the float32 weights: autocast casts them for
    the matmuls. (A bfloat16 copy of the weights with these as master weights, which saves
    those casts, was no faster here: docs/benchmarks.md.) ``eps``: Adam's epsilon."""
    params = list(model.parameters())
    if hasattr(torch, "_fused_adam_"):
        try:
            return FusedAdam(params, lr, eps)
        except ValueError:
            pass
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps)
