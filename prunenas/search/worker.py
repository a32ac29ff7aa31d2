"""A worker process of `prunenas search --workers N` / `--gpus`: `python -m prunenas.search.worker CONFIG.json`.

The main process resolves the whole search (space, data, recipe overrides, run settings, study) and
writes it to the study folder as JSON; every worker loads the same space and data from it and runs
trials of the shared study until the study-wide cap is reached. Exit codes as the CLI's: 0 done,
2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from prunenas.errors import PrunenasError


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
        data = load_data(config.data_config(), seed=config.seed)
        run_search(config, space, data, log=lambda _msg: None)
        return 0
    except PrunenasError as exc:
        print(f"prunenas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunenas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
