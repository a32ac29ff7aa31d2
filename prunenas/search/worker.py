"""A worker process of `prunenas search --workers N` / `--gpus`: `python -m prunenas.search.worker CONFIG.json`.

The main process resolves the whole search (space, data, recipe overrides, run settings, study) and
writes it to the study folder as JSON; every worker loads the same space and data from it and runs
trials of the shared study until the study-wide cap is reached. Exit codes as the CLI's: 0 done,
2 bad input (one line on stderr), 130 interrupted (quietly: the parent prints the one line).

With `--gpus-per-trial N` a worker is a torchrun group of N processes: rank 0 runs the trials, and before
training each candidate it hands the genotype, recipe and run folder to the other ranks, which train it
with it data-parallel (`prunenas.distributed`) and then wait for the next one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from prunenas import distributed, interrupts
from prunenas.config import RunSettings
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.prepare import load_data, searched_space
from prunenas.recipes import Recipe
from prunenas.search import run_search
from prunenas.search.config import SearchConfig
from prunenas.train import train

FOLLOWER_WAIT_S = 24 * 3600.0  # a follower waits this long for rank 0's next candidate
GROUP_FLAG = "--torchrun"  # the launcher of a trial group: torchrun, stopped quietly when interrupted


def follow(space: Any, data: Any) -> None:
    """A non-zero rank of a trial group: train every candidate rank 0 hands over, until it says stop."""

    while True:
        job = distributed.share(None)
        if job is None:
            return
        train(
            space, Genotype.from_dict(job["genotype"]), data, Recipe.from_dict(job["recipe"]),
            RunSettings.from_dict(job["settings"]), out_dir=job["out"], evaluate_test=False,
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; interrupted (Ctrl-C reaches the parent's whole process group, and the parent forwards
    a SIGINT of its own) it stops in order and quietly with exit 130: the parent says "interrupted" once."""

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [GROUP_FLAG]:
        return _launch_group(args[1:], process_ends=argv is None)
    if len(args) != 1:
        print("usage: python -m prunenas.search.worker SEARCH_CONFIG.json", file=sys.stderr)
        return 2
    with interrupts.orderly_shutdown(process_ends=argv is None):
        try:
            return _work(args[0])
        except PrunenasError as exc:
            if interrupts.received() is not None:
                return interrupts.EXIT_CODE
            print(f"prunenas: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return interrupts.EXIT_CODE
        except BaseException:
            if interrupts.received() is not None:  # what the signal broke on its way (a peer rank gone, ...)
                return interrupts.EXIT_CODE
            raise


def _launch_group(torchrun_args: list[str], process_ends: bool) -> int:
    """`python -m prunenas.search.worker --torchrun TORCHRUN_ARGS...`: torchrun's launcher for a trial group
    (`--gpus-per-trial`). Interrupted, torchrun stops its processes (which stop quietly, as every worker does)
    and then raises from its own signal handler at every further signal, with its log lines and tracebacks:
    here it stops quietly with exit 130 instead, and the signals after the first change nothing."""
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    for name in list(logging.root.manager.loggerDict):  # "Received 2 death signal", "Sending process ...", ...
        if name.startswith("torch.distributed.elastic"):  # (each has its own level: the parent's would not do)
            logging.getLogger(name).setLevel(logging.ERROR)
    with interrupts.orderly_shutdown(process_ends=process_ends):
        try:
            try:
                torchrun.main(torchrun_args)
                return 0
            except (SignalException, KeyboardInterrupt):
                interrupts.absorb()
                return interrupts.EXIT_CODE
        except (SignalException, KeyboardInterrupt):  # one more signal before the line above took them over
            interrupts.absorb()
            return interrupts.EXIT_CODE


def _work(config_path: str) -> int:
    config = SearchConfig.load(config_path)
    space = searched_space(config)
    world = distributed.world()
    if not world.parallel:
        data = load_data(config.data, config.seed)
        run_search(config, space, data, log=lambda _msg: None)
        return 0
    distributed.join(world, config.run.device, timeout_s=FOLLOWER_WAIT_S)
    if not world.main:  # rank 0 decodes (or builds the disk cache) first
        distributed.barrier()
    data = load_data(config.data, config.seed)
    if world.main:
        distributed.barrier()
        try:
            run_search(config, space, data, log=lambda _msg: None)
        finally:
            distributed.share(None)  # the followers' signal to stop
    else:
        follow(space, data)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
