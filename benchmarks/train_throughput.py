"""Training throughput of prunenas's trainer against a conventionally written loop, same model/data/batch.

The reference is written the way the Rethinking repository trains CIFAR models: a torch Dataset that
transforms one image at a time (pad 4 + random crop + horizontal flip + to-tensor + normalize; with
torchvision's transforms when it imports, else the same steps in numpy), a DataLoader with worker
processes, an eager fp32 model, and `loss.item()` every step for the running average.

prunenas's trainer keeps the uint8 dataset on the device, augments whole batches there and reads
losses once per epoch (plus channels_last and bf16 autocast on CUDA).

Experimental variants of the prunenas loop (for benchmarks/gpu_suite.py; the trainer has neither yet):
--compile wraps the model in torch.compile; --cuda-graphs captures the whole step (forward, loss,
backward, SGD) once as a CUDA graph and replays it (`StepRunner`). --no-amp / --no-channels-last turn
off bf16 autocast / channels_last. On CUDA the timed steps are timed with CUDA events.

    python benchmarks/train_throughput.py --space resnet20_channels --steps 200 --batch-size 128 \
        --dataset cifar10 --data-dir ../shared/datasets/cifar10-jpeg.tar.gz

Prints images/s of both (training steps only, after warm-up steps) and their ratio; --json writes them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
import torch.nn.functional as F

from prunenas.data import DeviceBatches, ImageSet, load_dataset
from prunenas.recipes import Recipe
from prunenas.spaces import get_space
from prunenas.train import TrainStep, resolve_device


class Timer:
    """Seconds between start() and stop(): CUDA events on CUDA (recorded after a synchronize), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self._t0 = 0.0
        self._e0: Any = None

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self._e0 = torch.cuda.Event(enable_timing=True)
            self._e0.record()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return float(self._e0.elapsed_time(end)) / 1000.0
        return time.perf_counter() - self._t0


class StepRunner:
    """One SGD training step (forward, cross-entropy, backward, SGD with momentum and weight decay) on static
    input buffers, captured once as a CUDA graph and replayed (`capture=True` on CUDA), or run eagerly.

    Stock torch.optim.SGD takes its lr as a Python float, which a graph bakes in at capture; here the lr is a
    0-dim device tensor (`set_lr` changes it between replays, so a schedule works without recapture). The
    update uses foreach ops and matches torch.optim.SGD with dampening 0. Warm-up steps (on a side stream
    before capture, as CUDA graphs need) are real training steps on the first batch. Gradients stay allocated
    in the graph's pool between replays (never zero or free them after capture: the replays write into that
    memory); the training loss is summed on the device (`loss_sum`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
        nesterov: bool = False,
        amp: bool = False,
        capture: bool = True,
        warmup: int = 3,
    ) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.momentum, self.weight_decay, self.nesterov, self.amp = momentum, weight_decay, nesterov, amp
        self.device = x.device
        self.lr = torch.tensor(float(lr), dtype=torch.float32, device=self.device)
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.x, self.y = x.clone(), y.clone()
        self.loss_sum = torch.zeros((), device=self.device)
        self.graph: Any = None
        self.warmup_steps = warmup
        model.train()
        self._clear_grads()
        if capture and self.device.type == "cuda":
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._body()
                    self._clear_grads()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._body()
        else:
            for _ in range(warmup):
                self._body()
                self._clear_grads()

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _clear_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def _body(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        loss.backward()
        self._sgd()
        self.loss_sum.add_(loss.detach())

    @torch.no_grad()
    def _sgd(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.weight_decay:
            torch._foreach_add_(grads, self.params, alpha=self.weight_decay)  # d_p = g + wd * p
        update = grads
        if self.momentum:
            torch._foreach_mul_(self.bufs, self.momentum)  # buf = momentum * buf + d_p
            torch._foreach_add_(self.bufs, grads)
            if self.nesterov:
                torch._foreach_add_(grads, self.bufs, alpha=self.momentum)
            else:
                update = self.bufs
        torch._foreach_sub_(self.params, torch._foreach_mul(update, self.lr))  # p -= lr * update

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(float(lr))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._body()
            self._clear_grads()


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


def reference_loop(
    model: torch.nn.Module, data: Any, args: argparse.Namespace, device: torch.device, stats: dict | None = None
) -> float:
    """Images/s of the conventional loop; `stats` (when given) receives seconds, images, steps, setup_s, loss_mean."""
    t_enter = time.perf_counter()
    ds = PerImageDataset(data.train, data.mean, data.std, args.seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    seen, steps, running, timed_loss = 0, 0, 0.0, 0.0
    timer = Timer(device)
    start = None
    while steps < args.warmup + args.steps:
        for x, y in loader:
            if steps == args.warmup:
                start = time.perf_counter()
                timer.start()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()  # the per-step host sync of a conventional loop
            running += value
            steps += 1
            if steps > args.warmup:
                seen += y.numel()
                timed_loss += value
            if steps >= args.warmup + args.steps:
                break
    assert start is not None
    seconds = timer.stop()
    if stats is not None:
        stats.update(seconds=seconds, images=seen, steps=args.steps, setup_s=start - t_enter)
        stats.update(loss_mean=timed_loss / max(1, args.steps), amp=False, channels_last=False)
    return seen / seconds


def _flag(args: argparse.Namespace, name: str, default: bool) -> bool:
    value = getattr(args, name, None)
    return default if value is None else bool(value)


def prunenas_loop(
    model: torch.nn.Module, data: Any, args: argparse.Namespace, device: torch.device, stats: dict | None = None
) -> float:
    """The trainer's inner loop (prunenas.train.TrainStep over DeviceBatches), timed over a fixed number of steps.

    Variants through `args` (missing attributes keep the trainer's choices): amp and channels_last (None: on
    for CUDA; bf16 autocast only on CUDA), compile (torch.compile the model; compile_mode if set),
    cuda_graphs (`StepRunner`: the whole step as one CUDA graph; eager where there is no CUDA). `stats` (when
    given) receives
    seconds, images, steps, setup_s (everything before the timed steps: upload, compile, capture, warm-up),
    loss_mean (mean training loss over the timed steps) and the settings used.
    """
    t_enter = time.perf_counter()
    cuda = device.type == "cuda"
    amp = _flag(args, "amp", cuda) and cuda
    channels_last = _flag(args, "channels_last", cuda)
    use_compile = bool(getattr(args, "compile", False))
    graphs = bool(getattr(args, "cuda_graphs", False))
    if use_compile and graphs:
        raise ValueError("choose one of compile and cuda_graphs")
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    batches = DeviceBatches(
        data.train, batch_size=args.batch_size, device=device, mean=data.mean, std=data.std, augment=True,
        shuffle=True, drop_last=True, seed=args.seed, channels_last=channels_last,
    )  # fmt: skip
    model.train()
    runner: StepRunner | None = None
    step: Callable[[torch.Tensor, torch.Tensor], None]
    if graphs:
        x0, y0 = next(iter(batches.epoch(0)))
        runner = StepRunner(model, x0, y0, lr=0.1, momentum=0.9, weight_decay=1e-4, amp=amp, capture=cuda)
        loss_sum = runner.loss_sum
        step = runner.step
    else:
        # The trainer's own step (prunenas.train.TrainStep): SGD 0.9, lr 0.1, wd 1e-4, sums on the device.
        train_step = TrainStep(model, Recipe(lr=0.1, momentum=0.9, weight_decay=1e-4), amp=amp)
        if use_compile:
            train_step.forward = torch.compile(model, mode=getattr(args, "compile_mode", None))
        loss_sum = train_step.loss_sum  # summed per image on the device (StepRunner sums per step)
        step = train_step

    timer = Timer(device)
    seen, steps, epoch = 0, 0, 0
    start = None
    loss_before = None
    while steps < args.warmup + args.steps:
        for x, y in batches.epoch(epoch):
            if steps == args.warmup:
                start = time.perf_counter()
                timer.start()
                loss_before = loss_sum.clone()
            step(x, y)
            steps += 1
            if steps > args.warmup:
                seen += y.numel()
            if steps >= args.warmup + args.steps:
                break
        epoch += 1
    assert start is not None and loss_before is not None
    seconds = timer.stop()
    timed_loss = float(loss_sum - loss_before)  # one read at the end
    if not graphs:
        timed_loss /= args.batch_size  # TrainStep sums loss x images; per-step means like StepRunner's
    if stats is not None:
        stats.update(seconds=seconds, images=seen, steps=args.steps, setup_s=start - t_enter)
        stats.update(loss_mean=timed_loss / max(1, args.steps), amp=amp, channels_last=channels_last)
        stats.update(compile=use_compile, cuda_graphs=graphs, captured=runner is not None and runner.captured)
    return seen / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="resnet20_channels")
    p.add_argument("--genotype", default=None, help="genotype file (default: the space's reference)")
    p.add_argument("--dataset", default="digits")
    common.add_data_dir(p, None)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    common.add_device(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    v = p.add_argument_group("experimental variants of the prunenas loop (default: the trainer's own)")
    v.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no bf16 autocast on CUDA")
    v.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    v.add_argument("--compile", action="store_true", help="torch.compile the model")
    v.add_argument("--cuda-graphs", action="store_true", help="capture the whole step as a CUDA graph")
    args = p.parse_args()
    if args.compile and args.cuda_graphs:
        p.error("choose one of --compile and --cuda-graphs")

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
            "date": common.stamp(),
            "device": common.device_name(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "args": {k: str(v) for k, v in vars(args).items()},
            "images_per_s": results,
            "ratio": ratio,
        }
        common.write_text(args.json, common.to_json(payload))


if __name__ == "__main__":
    main()
