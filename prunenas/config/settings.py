"""The data and run settings of every command: which images (`DataConfig`), how and where a run executes
(`RunSettings`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from prunenas.config.base import Config
from prunenas.config.fields import setting
from prunenas.config.values import ConfigError

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder")
#: Input normalisation: "train" = the training split's own per-channel statistics; the fixed constants
#: of the Rethinking repository ("cifar") and of open_lth ("imagenet"); see `prunenas.data.NORMALIZATIONS`.
NORMALIZE = ("train", "cifar", "imagenet")
DATA_CACHES = ("auto", "memory", "disk")


#: Datasets shipped inside prunenas: no folder, download, disk cache or image files of their own.
EMBEDDED_DATASETS = ("digits",)
_EMBEDDED = (
    "to --dataset digits, whose images are embedded in prunenas (nothing is read from a folder, decoded from "
    "files or cached on disk)"
)


@dataclass(frozen=True)
class DataConfig(Config):
    """Which images a run trains and validates on."""

    cli_group: ClassVar[str] = "data"

    dataset: str = setting(
        "cifar10", "cifar10, cifar100, digits (embedded, no download) or imagefolder (your own)", choices=DATASETS
    )
    data_dir: str | None = setting(
        None,
        "dataset folder or .tar.gz (CIFAR python batches or an ImageFolder tree with train/ and test/); "
        "default: $PRUNENAS_DATA, else CIFAR is downloaded into the cache",
        identity=False,
        metavar="DIR",
    )
    train_subset: int | None = setting(None, "train on N images only (quick runs)", low=1, metavar="N")
    val_size: int | None = setting(
        None, "held-out validation images (default: a tenth, CIFAR 5000; 0 = train on every training image, no "
        "validation, as the papers' code did)", low=0, metavar="N",
    )  # fmt: skip
    normalize: str = setting(
        "train", "input normalisation: the training split's statistics, or the fixed constants of the Rethinking "
        "code (cifar) or open_lth (imagenet)", choices=NORMALIZE, omit_default=True,
    )  # fmt: skip
    image_size: int = setting(
        32, "pixels the model sees (ImageFolder data is resized; disk-cached images are cropped to it)", low=1,
        omit_default=True, metavar="PX",
    )  # fmt: skip
    stored_size: int | None = setting(
        None, "disk cache: pixels images are stored at (default --image-size x 8/7, room for crops)", low=1,
        omit_default=True, metavar="PX",
    )  # fmt: skip
    data_cache: str = setting(
        "auto", "where decoded images live: memory (whole on the device), disk (a memory-mapped cache, streamed) "
        "or auto (disk when they would take over a quarter of the free host memory)", choices=DATA_CACHES,
        identity=False,
    )  # fmt: skip
    bad_images: str = setting(
        "stop", "unreadable or truncated images: stop with their names, or skip them (counted and listed)",
        choices=("stop", "skip"), omit_default=True,
    )  # fmt: skip

    conditions: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        name: lambda cfg: _EMBEDDED if cfg.dataset in EMBEDDED_DATASETS else None
        for name in ("data_dir", "stored_size", "data_cache", "bad_images")
    }


DEVICES = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class RunSettings(Config):
    """How and where a run executes (not what it learns): device, seed, speed switches, output.

    Only the seed changes the result (init, masks, split order, augmentation); precision switches
    are recorded with every run but are not part of its identity, so a run resumes on another device.
    """

    cli_group: ClassVar[str] = "run"

    device: str = setting("auto", f"where to train: {DEVICES}", identity=False)
    seed: int = setting(0, "seed of init, masks, split order and augmentation", low=0, high=2**63 - 1)
    channels_last: bool | None = setting(
        None, "channels_last memory format (default: on for CUDA and for bf16 on a CPU)", identity=False
    )
    amp: bool | None = setting(
        None, "bf16 autocast (default: on for CUDA, and on CPUs with AMX-BF16; refused on a CPU without bf16 "
        "instructions; --no-amp: exact fp32)", identity=False,
    )  # fmt: skip
    compile: bool = setting(False, "torch.compile the model (pays off only for long runs)", identity=False)
    eval_every: int | None = setting(
        None, "validate every K epochs and at the end (default: every epoch; a search's proxy runs validate only "
        "at the end, since they are ranked on the final model, unless --pruner needs per-epoch reports)",
        low=1, metavar="K", identity=False,
    )  # fmt: skip
    test_every_epoch: bool = setting(
        False, "also evaluate the test set after every epoch and report the best such epoch, labelled "
        "test-selected (the papers' code reported it; the final-epoch test accuracy stays the honest number)",
        identity=False,
    )  # fmt: skip
    keep_last_batch: bool = setting(
        False, "train on each epoch's last, partial batch too (the papers' code does; prunenas drops it so every "
        "step has the same batch size); set by --protocol rethinking|frankle", cli=False,
    )  # fmt: skip
    quiet: bool = setting(False, "no progress bar", identity=False, aliases=("-q",))
    resume: bool = setting(True, "resume from the run folder's checkpoint", identity=False, cli=False)
    checkpoint: bool = setting(True, "write a checkpoint every epoch", identity=False, cli=False)
    plot: bool = setting(True, "write curve.png", identity=False, cli=False)
    threads: int | None = setting(
        None, "CPU threads for training (default: the cores this process may use, shared among the training "
        "processes running on this machine)", low=1, identity=False, metavar="N",
    )  # fmt: skip

    def check(self) -> None:
        name = self.device
        if name == "auto" or name == "cpu":
            return
        base, _, index = name.partition(":")
        if base != "cuda" or (index and not index.isdigit()):
            raise ConfigError(f"--device {name!r} is not supported; use {DEVICES}")
