"""The small search the search tests run: the tiny ResNet-8 space on 64 digits, two 1-epoch trials; and
`search_config`, which builds a `SearchConfig` from settings by their flag names as the tests give them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from prunenas.metrics import Limit
from prunenas.search import BUDGETS, Budget, SearchConfig

TINY_BUDGET = replace(BUDGETS["smoke"], trials=2, proxy_epochs=1, seed_targets=(0.5,), top_k=1, final_epochs=1)


def budget_settings(budget: Budget) -> dict[str, Any]:
    """A resolved budget as the settings that give it (on the smoke preset, whose recipe preset it keeps)."""
    values = dataclasses.asdict(budget)
    values.pop("train_subset")
    values.pop("recipe_preset")
    values["seed_targets"] = list(budget.seed_targets)
    return {"budget": "smoke", **values}


def search_config(space: Any, out: Path, study: str = "t", **settings: Any) -> SearchConfig:
    """A search of `space` on digits in `out`, quiet; `settings` by their flag names (trials, lr, threads,
    latency_batch...), `budget` also as a resolved `Budget`, limits also as `Limit`s, the exports root as
    `exports`."""
    budget = settings.pop("budget", TINY_BUDGET)
    if isinstance(budget, Budget):
        settings = {**budget_settings(budget), **settings}
        if not budget.seed_targets:  # no seeding: the proposers would not apply
            settings["seeding"] = False
            settings.pop("seed_targets")
            if settings.get("mode", "genes") == "genes":
                settings.pop("proposers", None)
    else:
        settings["budget"] = budget
    if settings.get("mode") == "proposers":  # seeding is for --mode genes
        settings.pop("seed_targets", None)
    if settings.get("final") is False:  # a budget's retraining length does not apply then
        settings.pop("final_epochs", None)
    for key in ("max", "min"):
        if isinstance(settings.get(key), Sequence):
            settings[key] = [lim.text() if isinstance(lim, Limit) else lim for lim in settings[key]]
    for key in ("exports", "out"):
        if key in settings:
            settings[key] = str(settings[key])
    settings.setdefault("quiet", True)
    base = SearchConfig(space=space.name, data={"dataset": "digits"}, search={"study": study, "out": str(out)})
    return base.with_settings("search_config()", **settings)  # type: ignore[no-any-return]


def tiny_search_config(tmp_path: Path, space: Any, study: str, **changes: Any) -> SearchConfig:
    """A search of `space` on digits in tmp_path/study with the tiny budget, no final retraining, the uniform
    proposer, quiet; `changes` on top (by flag name)."""
    settings = {"final": False, "proposers": ("uniform",), **changes}
    return search_config(space, tmp_path / "study", study, **settings)
