"""The small search the search tests run: the tiny ResNet-8 space on 64 digits, two 1-epoch trials."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prunenas.search import BUDGETS, SearchConfig

TINY_BUDGET = replace(BUDGETS["smoke"], trials=2, proxy_epochs=1, seed_targets=(0.5,), top_k=1, final_epochs=1)


def tiny_search_config(tmp_path: Path, space: Any, study: str, **changes: Any) -> SearchConfig:
    """A search of `space` on digits in tmp_path/study with the tiny budget, no final retraining, the uniform
    proposer, quiet; `changes` on top."""
    base = SearchConfig(
        space=space.name, dataset="digits", study=study, out=tmp_path / "study", budget=TINY_BUDGET,
        budget_name="test", quiet=True, final=False, proposer_names=("uniform",),
    )  # fmt: skip
    return replace(base, **changes)
