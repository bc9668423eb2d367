"""Throughput of Conv5_FC3_SSDA in PyTorch, measured as examples/bench_model.rs does:
training volumes/s (source and domain heads, backward, Adam step) and inference
volumes/s (target head, no_grad), on random tensors.

Usage: python scripts/bench_model.py [D H W] [batch] [batches] [device]
"""
import sys
import time

import torch
from torch import nn


def pooled(n):
    return (n + 1) // 2


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


class PlainAdam:
    """Adam with L2 weight decay, as torch.optim.Adam(foreach=False) computes it."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad + self.wd * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.t))


def head(flat, k):
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(flat, 1300), nn.ReLU(),
                         nn.Linear(1300, 50), nn.ReLU(), nn.Linear(50, k))


class Conv5FC3SSDA(nn.Module):
    def __init__(self, grid):
        super().__init__()
        layers, cin = [], 1
        for cout in [8, 16, 32, 64, 128]:
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(),
                       nn.MaxPool3d(2, 2, ceil_mode=True)]
            cin = cout
        self.extractor = nn.Sequential(*layers)
        cells = 1
        for n in grid:
            for _ in range(5):
                n = pooled(n)
            cells *= n
        flat = 128 * cells
        self.source_head = head(flat, 2)
        self.target_head = head(flat, 2)
        self.domain_head = head(flat, 2)


def main():
    args = sys.argv[1:]
    num = lambda i, d: int(args[i]) if len(args) > i else d
    grid = [num(0, 80), num(1, 96), num(2, 80)]
    batch, batches = num(3, 8), num(4, 4)
    device = args[5] if len(args) > 5 else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = Conv5FC3SSDA(grid).to(device)
    try:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)
    except ImportError:
        # The minimal CPU install lacks sympy, which torch.optim imports through dynamo.
        opt = PlainAdam(list(net.parameters()), lr=1e-4, weight_decay=1e-4)
    inputs = [torch.rand(batch, 1, *grid, device=device) for _ in range(batches)]
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    ce = nn.CrossEntropyLoss()

    def step(x):
        net.train()
        f = net.extractor(x)
        loss = ce(net.source_head(f), labels) + 0.1 * ce(net.domain_head(GradReverse.apply(f, 0.5)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def infer(x):
        net.eval()
        with torch.no_grad():
            return net.target_head(net.extractor(x)).softmax(-1).sum().item()

    step(inputs[0])
    t = time.perf_counter()
    for x in inputs:
        step(x)
    train_s = time.perf_counter() - t
    infer(inputs[0])
    t = time.perf_counter()
    for x in inputs:
        infer(x)
    infer_s = time.perf_counter() - t
    vols = batch * batches
    print(f"pytorch grid {grid} batch {batch} batches {batches} device {device} threads {torch.get_num_threads()}")
    print(f"train: {vols / train_s:.2f} volumes/s ({train_s:.2f} s for {vols} volumes)")
    print(f"infer: {vols / infer_s:.2f} volumes/s ({infer_s:.2f} s for {vols} volumes)")


if __name__ == "__main__":
    main()
