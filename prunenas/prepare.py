"""Setting a job up, below both the command line and the Python API: a space resolved against the data it
will see, the data loaded, a pruning target parsed.

`prunenas.cli` and `prunenas.api` call these with what their users gave (flags, arguments), and so does
`prunenas.search.config.prepare_search`, which assembles a search for both; search worker processes call
them with the configuration they receive. So a search set up from Python runs exactly as the same search
from the command line.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from prunenas.config import DataConfig
from prunenas.errors import PrunenasError

if TYPE_CHECKING:
    from prunenas.data import DatasetSplits
    from prunenas.genotype import Genotype
    from prunenas.proposers.base import Target
    from prunenas.search.config import SearchConfig
    from prunenas.spaces.base import Space


def load_data(cfg: DataConfig, seed: int) -> DatasetSplits:
    """The train/val/test splits `cfg` describes (its folder, else $PRUNENAS_DATA), split with `seed`."""
    from prunenas.data import load_dataset

    data_dir = cfg.data_dir or os.environ.get("PRUNENAS_DATA") or None
    return load_dataset(
        cfg.dataset, data_dir, val_size=cfg.val_size, train_subset=cfg.train_subset, seed=seed,
        normalize=cfg.normalize, image_size=cfg.image_size, stored_size=cfg.stored_size, data_cache=cfg.data_cache,
        bad_images=cfg.bad_images,
    )  # fmt: skip


def fit_to_data(
    space: Space,
    genotype: Genotype | None = None,
    *,
    quiet: bool = False,
    image_size: int | None = None,
    dataset: str | None = None,
) -> tuple[Space, Genotype | None]:
    """A traced space named by its factory at the pixel size the model sees (`image_size`, default the
    decoded size 32), the genotype moved over with its genes unchanged, with a notice; any other space
    unchanged (a note when it counts MACs at another size). A detector stays at its own size (it resizes its
    input itself). With `dataset`, a space of another task than the dataset's is refused (one line naming both
    flags)."""
    from prunenas.data import DEFAULT_IMAGE_SIZE
    from prunenas.spaces.registry import space_for_image_size
    from prunenas.tasks import check_pairing

    if dataset is not None:
        check_pairing(space, dataset)
    if space.task == "detection":
        return space, genotype
    size = image_size or DEFAULT_IMAGE_SIZE
    fitted = space_for_image_size(space, size)
    if fitted is space:
        if not quiet and space.input_shape[1] != size:
            print(
                f"note: --space {space.name} counts MACs at {space.input_shape[1]} px but the model sees {size} px "
                f"(it runs at any size; MACs grow by about ({size}/{space.input_shape[1]})^2)",
                file=sys.stderr,
            )
        return space, genotype
    if genotype is not None:
        from prunenas.genotype import Genotype

        genotype = fitted.validate(Genotype(fitted.name, dict(genotype.genes), genotype.provenance))
    if not quiet:
        print(
            f"note: the model sees {size}x{size} pixels, so --space {space.name} runs as {fitted.name} (MACs counted "
            "at that size)",
            file=sys.stderr,
        )
    return fitted, genotype


def target(
    ratio: float | None = None,
    macs_ratio: float | None = None,
    density: float | None = None,
    latency_ratio: float | None = None,
) -> Target:
    """The one pruning target given (`--ratio`, `--macs-ratio`, `--density` or `--latency-ratio`)."""
    from prunenas.proposers.base import Target

    values = {"ratio": ratio, "macs_ratio": macs_ratio, "density": density, "latency_ratio": latency_ratio}
    given = [(k, v) for k, v in values.items() if v is not None]
    if len(given) != 1:
        raise PrunenasError("give exactly one target: --ratio R, --macs-ratio R, --density D or --latency-ratio R")
    return Target(given[0][0], given[0][1])  # type: ignore[arg-type]


def searched_space(config: SearchConfig) -> Space:
    """The space a search configuration names (as its worker processes find it)."""
    from prunenas.spaces import get_space

    return get_space(config.space_ref or config.space)
