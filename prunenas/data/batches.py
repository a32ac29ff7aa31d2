"""Batches on the training device: normalized and augmented per batch there, from one of two sources.

``DeviceBatches`` keeps a whole split on the device as uint8 (small sets: CIFAR, digits, a few thousand
images). ``StreamBatches`` reads a disk-cached split (memory-mapped, ``prunenas.data.diskcache``) in large
contiguous chunks, copies each chunk to the device (pinned host memory and a side stream on CUDA, the next
chunk read ahead by a thread) and cuts batches from it, so host and device memory stay bounded whatever
the dataset's size. Both augment on the device, per batch, with the same code:

  crop "pad"  CIFAR-style: a random crop of the output size from the image zero-padded by ``padding`` (or,
              when the stored images are larger than the output, from the stored image), then a flip.
  crop "rrc"  ImageNet-style random-resized-crop (scale 0.08-1 of the area, aspect 3/4-4/3) to the output
              size, bilinear, then a flip.
  evaluation  a center crop of the output size (stored 256 -> 224: the usual resize-256 + center-crop-224).

Epoch ``e``'s order and augmentation depend only on (seed, e, batch size, device type), so a run resumed
at an epoch boundary replays exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from prunenas.data.splits import ImageSet, _check_positive
from prunenas.errors import DataError

CROPS = ("pad", "rrc")
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central `size` x `size` pixels of (N, C, H, W) images: the evaluation crop of images stored larger than
    the model's input (returned as they are when they are that size, or smaller)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size) or h < size or w < size:
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, :, top : top + size, left : left + size]


def check_batching(n: int, batch_size: int, drop_last: bool, shard: tuple[int, int]) -> None:
    """Refuse batches that cannot be made: of an empty set, a `drop_last` epoch with no whole batch, a shard
    (rank, world) out of range or a batch that does not split evenly over the world's processes."""
    _check_positive("batch_size", batch_size, "--batch-size")
    if n == 0:
        raise DataError("cannot make batches from an empty image set; check the dataset and split sizes")
    if drop_last and n < batch_size:
        raise DataError(
            f"batch_size {batch_size} is larger than the {n} images available, so drop_last leaves no batch; "
            f"pass --batch-size {n} or less"
        )
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    if batch_size % world:
        raise DataError(
            f"--batch-size {batch_size} does not split evenly over {world} processes; pass a multiple of {world}"
        )


class _Batches:
    """What both sources share: checks, the per-epoch random draws, augmentation and normalization."""

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        padding: int = 4,
        flip: bool = True,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        out_size: int | None = None,
        crop: str = "pad",
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        n = len(data)
        check_batching(n, batch_size, drop_last, shard)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={mean!r} std={std!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {dtype}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        _, h, w = data.shape
        self.out_size = out_size or h
        if self.out_size > min(h, w):
            raise DataError(
                f"--image-size {self.out_size} is larger than the stored images ({h}x{w} px); pass --image-size "
                f"{min(h, w)} or less, or rebuild the cache with a larger --stored-size"
            )
        rank, world = shard
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.padding = padding
        self.flip = flip
        self.channels_last = channels_last
        self.dtype = dtype
        self.crop = crop
        self.rank, self.world = rank, world
        self.stored = (h, w)
        self.count = n
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        # normalize(x) = x * scale + shift = (x / 255 - mean) / std, as one fused multiply-add.
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, 3, 1, 1).to(self.device)
        self._rows = torch.arange(self.out_size, device=self.device)
        self._cols = torch.arange(self.out_size, device=self.device)

    @property
    def num_samples(self) -> int:
        """Images per epoch before drop_last."""
        return self.count

    def __len__(self) -> int:
        """Batches per epoch (every rank of a data-parallel run steps the same number of times)."""
        n = self.count
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _mine(self, sl: slice) -> slice:
        """This rank's part of the global batch at positions `sl` (every world-th image from the rank's)."""
        return sl if self.world == 1 else slice(sl.start + self.rank, sl.stop, self.world)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images (uint8, or float in 0..255) on this device -> ``dtype`` tensor ``(x / 255 - mean) / std``."""
        out = torch.addcmul(self._shift, x.to(torch.float32), self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out if self.dtype == torch.float32 else out.to(self.dtype)

    def _generator(self, epoch: int) -> tuple[torch.Generator, torch.device]:
        seed = (self.seed * 1_000_003 + epoch) % (1 << 63)
        try:
            gen = torch.Generator(device=self.device)
            where = self.device
        except RuntimeError:  # this device type has no generator: draw on the CPU and copy
            gen = torch.Generator()
            where = torch.device("cpu")
        gen.manual_seed(seed)
        return gen, where

    def _draws(self, epoch: int, order_of: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The epoch's order of `order_of` units and the augmentation parameters of its `count` images."""
        n = self.count
        gen, where = self._generator(epoch)
        if self.shuffle:
            order = torch.randperm(order_of, generator=gen, device=where).to(self.device)
        else:
            order = torch.arange(order_of, device=self.device)
        if not self.augment:
            return order, None
        h, _ = self.stored
        if self.crop == "rrc":
            u = torch.rand((4, n), generator=gen, device=where).to(self.device)
        else:
            span = 2 * self.padding + 1 if h == self.out_size else h - self.out_size + 1
            u = torch.randint(0, span, (2, n), generator=gen, device=where).to(self.device)
        flips = torch.randint(0, 2, (n,), generator=gen, device=where).to(self.device)
        if not self.flip:
            flips.zero_()
        return order, torch.cat([u.to(torch.float32), flips[None].to(torch.float32)])

    def _finish(self, xb: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """uint8 stored-size batch -> normalized output-size batch (augmented with `params` when training)."""
        if params is not None:
            if self.crop == "rrc":
                out = self._resized_crop(xb, params[:4], params[4].bool())
            else:
                out = self._crop_flip(xb, params[0].long(), params[1].long(), params[2].bool())
        else:
            out = self._center(xb)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return self.normalize(out)

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        return center_crop(x, self.out_size)

    def _crop_flip(self, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Per-image crop at offsets (dy, dx) (of the zero-padded batch when the stored size is the output size),
        then optional mirror; one gather."""
        b, c, h, w = x.shape
        s = self.out_size
        p = self.padding if h == s else 0
        if p == 0 and (h, w) == (s, s):
            cols = torch.where(flip[:, None], self._cols.flip(0)[None, :], self._cols[None, :]).expand(b, w)
            index = cols[:, None, None, :].expand(b, c, h, w)
            return x.gather(3, index)
        padded = F.pad(x, (p, p, p, p)) if p else x  # (b, c, h + 2p, w + 2p), zeros outside
        width = w + 2 * p
        rows = dy[:, None] + self._rows[None, :]  # (b, s)
        cols = dx[:, None] + self._cols[None, :]  # (b, s)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        flat = rows[:, :, None] * width + cols[:, None, :]  # (b, s, s) into the (padded) plane
        index = flat.view(b, 1, s * s).expand(b, c, s * s)
        return padded.reshape(b, c, -1).gather(2, index).view(b, c, s, s)

    def _resized_crop(self, x: torch.Tensor, u: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Random-resized-crop + flip as one bilinear resampling (affine grid), float 0..255 output."""
        b = x.shape[0]
        lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
        area = RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u[0]
        ratio = torch.exp(lo + (hi - lo) * u[1])
        cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width and height as fractions of the image
        ch = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (u[2] * (1 - cw) + cw / 2) * 2 - 1  # crop center in [-1, 1]
        cy = (u[3] * (1 - ch) + ch / 2) * 2 - 1
        sign = 1.0 - 2.0 * flip.to(torch.float32)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = cw * sign
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [b, 3, self.out_size, self.out_size], align_corners=False)
        return F.grid_sample(x.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False)


class DeviceBatches(_Batches):
    """Holds one ImageSet on a device as uint8 and yields normalized float batches.

    The defaults reproduce torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip on CIFAR, done per
    batch on the device without host syncs. See the module doc for `crop` and `out_size`.
    """

    def __init__(self, data: ImageSet, **kwargs: object) -> None:
        super().__init__(data, **kwargs)  # type: ignore[arg-type]
        if data.on_disk:
            raise ValueError("a disk-cached set streams: use StreamBatches (or make_batches)")
        self.x = data.x.to(self.device).contiguous()
        self.y = data.y.to(self.device)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches for ``epoch``: images ``dtype`` (B, 3, S, S), labels int64 (B,)."""
        order, params = self._draws(epoch, self.count)
        for b in range(len(self)):
            sl = self._mine(slice(b * self.batch_size, min(self.count, (b + 1) * self.batch_size)))
            idx = order[sl]
            xb = self.x.index_select(0, idx)
            yield self._finish(xb, None if params is None else params[:, sl]), self.y.index_select(0, idx)


class StreamBatches(_Batches):
    """A disk-cached (memory-mapped) ImageSet streamed to the device in chunks of about ``chunk_images``
    images.

    Shuffling is two-level, as loaders of large datasets do: the epoch's seeded permutation orders the
    chunks (contiguous runs of the set's rows, so reads are sequential), and the images of each chunk are
    permuted within it. One chunk is read ahead by a thread; on CUDA it lands in pinned memory and is copied
    on a side stream. Host memory: a few chunks (about 65 MB each at 1,024 images of 3 x 147 x 147). In a
    data-parallel run (``shard=(rank, world)``)
    rank r reads only the chunks at positions r, r + world, ... of the epoch's order and makes batches of
    batch_size / world images from them; every rank takes the same number of steps (the images beyond the
    last whole chunk of the rank with the fewest are left out of that epoch).
    """

    def __init__(self, data: ImageSet, *, chunk_images: int = 1024, **kwargs: object) -> None:
        super().__init__(data, **kwargs)  # type: ignore[arg-type]
        _check_positive("chunk_images", chunk_images, "chunk_images")
        self.data = data
        self.local = self.batch_size // self.world
        wanted = min(chunk_images, max(1, self.count // (4 * self.world)))  # several chunks per rank
        self.chunk = max(self.batch_size, wanted // self.batch_size * self.batch_size)
        self.num_chunks = math.ceil(self.count / self.chunk)
        self.cuda = self.device.type == "cuda"
        if self.world > 1 and self.count // self.chunk < self.world:
            raise DataError(
                f"{self.count} images are too few to share among {self.world} processes in batches of "
                f"{self.batch_size}; use fewer processes or a smaller --batch-size"
            )

    def __len__(self) -> int:
        if self.world == 1:
            return super().__len__()
        full = self.count // self.chunk  # whole chunks; each rank gets at least full // world of them
        return (full // self.world) * (self.chunk // self.batch_size)

    def _read(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk `c`'s images and labels on the host (pinned on CUDA)."""
        idx = torch.arange(c * self.chunk, min(self.count, (c + 1) * self.chunk))
        x = self.data.images(idx)
        y = self.data.labels.index_select(0, idx)
        if self.cuda:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def _chunks(self, order: list[int]) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(chunk id, images, labels) on the device, in `order`, the next one read ahead by a thread."""
        ahead: queue.Queue[tuple[int, tuple[torch.Tensor, torch.Tensor] | BaseException]] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def reader() -> None:
            for c in order:
                if stop.is_set():
                    return
                try:
                    item: tuple[torch.Tensor, torch.Tensor] | BaseException = self._read(c)
                except BaseException as exc:  # handed to the consumer, which raises it
                    item = exc
                while not stop.is_set():
                    try:
                        ahead.put((c, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if isinstance(item, BaseException):
                    return

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        stream = torch.cuda.Stream(self.device) if self.cuda else None
        try:
            for _ in order:
                c, item = ahead.get()
                if isinstance(item, BaseException):
                    raise item
                x, y = item
                if stream is not None:
                    with torch.cuda.stream(stream):
                        xd, yd = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    torch.cuda.current_stream(self.device).wait_stream(stream)
                else:
                    xd, yd = x.to(self.device), y.to(self.device)
                yield c, xd, yd
        finally:
            stop.set()
            thread.join()

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches for ``epoch`` (this rank's share in a data-parallel run)."""
        order, params = self._draws(epoch, self.num_chunks)  # params: per image, by its position in the set
        gen, where = self._generator(epoch + (1 << 40))  # within-chunk permutations, drawn apart from the rest
        chunks = [int(i) for i in order.tolist()]
        perms = [
            torch.randperm(min(self.chunk, self.count - c * self.chunk), generator=gen, device=where).to(self.device)
            if self.shuffle else None
            for c in chunks
        ]  # fmt: skip
        perm_of = dict(zip(chunks, perms, strict=True))
        batches = len(self)
        if self.world > 1:
            chunks = chunks[self.rank :: self.world]
        done = 0
        carry: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        for c, xd, yd in self._chunks(chunks):
            pd = None if params is None else params[:, c * self.chunk : c * self.chunk + xd.shape[0]]
            perm = perm_of[c]
            if perm is not None:
                xd, yd = xd.index_select(0, perm), yd.index_select(0, perm)
                pd = None if pd is None else pd.index_select(1, perm)
            if carry is not None:  # one process: the remainder of the previous chunk leads the next batch
                cx, cy, cp = carry
                xd, yd = torch.cat([cx, xd]), torch.cat([cy, yd])
                pd = None if pd is None or cp is None else torch.cat([cp, pd], dim=1)
                carry = None
            step = self.batch_size if self.world == 1 else self.local
            start = 0
            while xd.shape[0] - start >= step and done < batches:
                sl = slice(start, start + step)
                yield self._finish(xd[sl], None if pd is None else pd[:, sl]), yd[sl]
                start += step
                done += 1
            if done >= batches:
                break
            if self.world == 1 and start < xd.shape[0]:
                carry = (xd[start:], yd[start:], None if pd is None else pd[:, start:])
        if carry is not None and done < batches:  # the last, partial batch (drop_last=False)
            cx, cy, cp = carry
            yield self._finish(cx, cp), cy


def make_batches(data: ImageSet, **kwargs: object) -> DeviceBatches | StreamBatches:
    """DeviceBatches for an in-memory set, StreamBatches for a disk-cached one (same keyword arguments)."""
    if data.on_disk:
        return StreamBatches(data, **kwargs)  # type: ignore[arg-type]
    return DeviceBatches(data, **kwargs)
