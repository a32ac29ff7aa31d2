"""A worker process of `prunenas search --workers N` / `--gpus`: `python -m prunenas.search.worker CONFIG.json`.

The main process resolves the whole search (space, data, recipe overrides, run settings, study) and
writes it to the study folder as JSON; every worker loads the same space and data from it and runs
trials of the shared study until the study-wide cap is reached. Exit codes as the CLI's: 0 done,
2 bad input (one line on stderr), 130 interrupted.

With `--gpus-per-trial N` a worker is a torchrun group of N processes: rank 0 runs the trials, and before
training each candidate it hands the genotype, recipe and run folder to the other ranks, which train it
with it data-parallel (`prunenas.distributed`) and then wait for the next one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from prunenas import distributed
from prunenas.errors import PrunenasError

FOLLOWER_WAIT_S = 24 * 3600.0  # a follower waits this long for rank 0's next candidate


def follow(space: Any, data: Any) -> None:
    """A non-zero rank of a trial group: train every candidate rank 0 hands over, until it says stop."""
    from prunenas.config import RunSettings
    from prunenas.genotype import Genotype
    from prunenas.recipes import Recipe
    from prunenas.train import train

    while True:
        job = distributed.share(None)
        if job is None:
            return
        train(
            space, Genotype.from_dict(job["genotype"]), data, Recipe.from_dict(job["recipe"]),
            RunSettings.from_dict(job["settings"]), out_dir=job["out"], evaluate_test=False,
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m prunenas.search.worker SEARCH_CONFIG.json", file=sys.stderr)
        return 2
    try:
        from prunenas.api import load_data
        from prunenas.search import run_search
        from prunenas.search.config import SearchConfig
        from prunenas.spaces import get_space

        config = SearchConfig.load(args[0])
        space = get_space(config.space_ref or config.space)
        world = distributed.world()
        if not world.parallel:
            data = load_data(config.data_config(), seed=config.seed)
            run_search(config, space, data, log=lambda _msg: None)
            return 0
        distributed.join(world, config.device, timeout_s=FOLLOWER_WAIT_S)
        if not world.main:  # rank 0 decodes (or builds the disk cache) first
            distributed.barrier()
        data = load_data(config.data_config(), seed=config.seed)
        if world.main:
            distributed.barrier()
            try:
                run_search(config, space, data, log=lambda _msg: None)
            finally:
                distributed.share(None)  # the followers' signal to stop
        else:
            follow(space, data)
        return 0
    except PrunenasError as exc:
        print(f"prunenas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunenas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
