"""PyTorch counterpart of shrink-train's `bench_train` example, for
`cargo xtask bench train`: SGD (momentum 0.9) steps per second at a batch
size, after warm-up steps, on 60,000 MNIST-shaped (50,000 CIFAR-shaped)
samples held in memory (random values: speed does not depend on them), each
batch gathered by a shuffled index as a data loader would; BatchNorm in
training mode (``train()``).

Prints one line: steps_per_s=<f> batch=<n> steps=<n> cpu_ms_per_step=<f> (process
CPU time, all threads, per timed step).
"""

import argparse
import time

import torch
from torch import nn


def build(name):
    if name == "resnet20-cifar":
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures" / "gen"))
        from cifar_resnet20 import ResNet20

        return ResNet20(), (3, 32, 32)
    if name == "lenet-300-100":
        return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)), (784,)
    if name == "lenet-5":
        net = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
        )
        return net, (1, 28, 28)
    raise SystemExit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net, shape = build(a.model)
    n = 50000 if shape[0] == 3 else 60000
    x = torch.rand((n,) + shape)
    y = torch.randint(0, 10, (n,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    order = torch.randperm(n)
    warmup = a.warmup
    start = None
    for step in range(warmup + a.steps):
        if step == warmup:
            start = time.perf_counter()
            cpu0 = time.process_time()
        idx = order[(step * a.batch) % (n - a.batch):][: a.batch]
        opt.zero_grad()
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    print(f"steps_per_s={a.steps / elapsed:.2f} batch={a.batch} steps={a.steps} cpu_ms_per_step={cpu * 1e3 / a.steps:.2f}")


if __name__ == "__main__":
    main()
