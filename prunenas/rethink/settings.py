"""The `prunenas rethink` flags that size a study, as a config dataclass (light: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prunenas.config import Config, setting

BUDGETS = ("smoke", "fast", "paper")


@dataclass(frozen=True)
class RethinkSettings(Config):
    """The `prunenas rethink` flags that size the study (beside the data and run flags)."""

    cli_group: ClassVar[str] = "study"

    seeds: int = setting(1, "runs per arm, from --seed on (the paper used 5)", low=1, high=1000, metavar="N")
    budget: str = setting(
        "paper", "epochs: paper = the recipe (160, fine-tune 40, scratch-B scaled), fast = 1/4, smoke = 2 per arm",
        choices=BUDGETS,
    )  # fmt: skip
    epochs: int | None = setting(None, "base epochs E (unpruned, scratch-E; scratch-B scales E)", low=1, metavar="E")
    finetune_epochs: int | None = setting(None, "fine-tuning epochs (default 40 x budget)", low=1, metavar="F")
    batch_size: int | None = setting(None, "batch size of every arm (default: the space's recipe)", low=1)
    scratch_b_cap: float | None = setting(
        None, "cap scratch-B epochs at X times E", low=0.0, low_open=True, metavar="X"
    )
    reference: str | None = setting(None, "a trained reference (checkpoint.pt) instead of training one", metavar="CKPT")
    ablation: str | None = setting(None, "density spaces: shuffle,reinit,invert (Frankle et al. 2021)", metavar="A,B")
    protocol: str = setting(
        "prunenas", "preset of a paper's protocol: rethinking (Liu et al. 2019) or frankle (Frankle et al. 2021) "
        "sets validation split, reported accuracy, precision, normalisation and init; explicit flags win",
        choices=("prunenas", "rethinking", "frankle"),
    )  # fmt: skip
    out: str | None = setting(
        None, "study folder (default runs/rethink/SPACE-KEY-DATASET); rerun resumes", metavar="DIR"
    )
