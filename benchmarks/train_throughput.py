"""Training throughput of prunenas's trainer against a conventionally written loop, same model/data/batch.

The reference is written the way the Rethinking repository trains CIFAR models: a torch Dataset that
transforms one image at a time (pad 4 + random crop + horizontal flip + to-tensor + normalize; with
torchvision's transforms when it imports, else the same steps in numpy), a DataLoader with worker
processes, an eager fp32 model, and `loss.item()` every step for the running average.

prunenas's trainer keeps the uint8 dataset on the device, augments whole batches there and reads
losses once per epoch (plus channels_last and bf16 autocast on CUDA).

    python benchmarks/train_throughput.py --space resnet20_channels --steps 200 --batch-size 128 \
        --dataset cifar10 --data-dir ../shared/datasets/cifar10-jpeg.tar.gz

Prints images/s of both (training steps only, after warm-up steps) and their ratio; --json writes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prunenas.data import DeviceBatches, ImageSet, load_dataset
from prunenas.spaces import get_space
from prunenas.train import resolve_device


class PerImageDataset(torch.utils.data.Dataset):
    """One image at a time, as torchvision's CIFAR10 + transforms.Compose would do it."""

    def __init__(self, data: ImageSet, mean: tuple[float, ...], std: tuple[float, ...], seed: int) -> None:
        self.x = data.x.permute(0, 2, 3, 1).contiguous().numpy()  # HWC uint8, like CIFAR10.data
        self.y = data.y.numpy()
        self.mean = np.array(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(std, dtype=np.float32).reshape(3, 1, 1)
        self.rng = np.random.default_rng(seed)
        self.tv: Any = None
        try:  # the real thing when it imports (GPU machines)
            import torchvision.transforms as T
            from PIL import Image

            self.tv = T.Compose(
                [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
            )
            self.image = Image.fromarray
        except Exception:
            self.tv = None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.x[i]
        if self.tv is not None:
            return self.tv(self.image(img)), int(self.y[i])
        padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
        dy, dx = self.rng.integers(0, 9, size=2)
        crop = padded[dy : dy + 32, dx : dx + 32]
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        chw = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
        return torch.from_numpy((chw - self.mean) / self.std), int(self.y[i])


def reference_loop(model: torch.nn.Module, data: Any, args: argparse.Namespace, device: torch.device) -> float:
    ds = PerImageDataset(data.train, data.mean, data.std, args.seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    seen, steps, running = 0, 0, 0.0
    start = None
    while steps < args.warmup + args.steps:
        for x, y in loader:
            if steps == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()  # the per-step host sync of a conventional loop
            steps += 1
            if steps > args.warmup:
                seen += y.numel()
            if steps >= args.warmup + args.steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert start is not None
    return seen / (time.perf_counter() - start)


def prunenas_loop(model: torch.nn.Module, data: Any, args: argparse.Namespace, device: torch.device) -> float:
    """The trainer's inner loop (prunenas.train.train), timed over a fixed number of steps."""
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    batches = DeviceBatches(
        data.train, batch_size=args.batch_size, device=device, mean=data.mean, std=data.std, augment=True,
        shuffle=True, drop_last=True, seed=args.seed, channels_last=cuda,
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    loss_sum = torch.zeros((), device=device)
    seen, steps, epoch = 0, 0, 0
    start = None
    while steps < args.warmup + args.steps:
        for x, y in batches.epoch(epoch):
            if steps == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            steps += 1
            if steps > args.warmup:
                seen += y.numel()
            if steps >= args.warmup + args.steps:
                break
        epoch += 1
    float(loss_sum)  # one read at the end
    if cuda:
        torch.cuda.synchronize()
    assert start is not None
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="resnet20_channels")
    p.add_argument("--genotype", default=None, help="genotype file (default: the space's reference)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    device = resolve_device(args.device)
    space = get_space(args.space)
    genotype = space.reference()
    if args.genotype:
        from prunenas.genotype import Genotype

        genotype = space.validate(Genotype.load(args.genotype))
    data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    results = {}
    for name, loop in (("reference", reference_loop), ("prunenas", prunenas_loop)):
        torch.manual_seed(args.seed)
        model = space.build(genotype, num_classes=data.num_classes).to(device)
        results[name] = loop(model, data, args, device)
        print(f"{name:10s} {results[name]:8.1f} img/s")
    ratio = results["prunenas"] / results["reference"]
    print(f"ratio      {ratio:8.2f}x  ({space.name}, batch {args.batch_size}, {args.steps} steps, {device})")
    if args.json:
        payload = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "args": {k: str(v) for k, v in vars(args).items()},
            "images_per_s": results,
            "ratio": ratio,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
