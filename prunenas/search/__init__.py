"""Architecture search with Optuna: the only package that imports optuna.

    settings    the search's own settings: `SearchSettings` (its flags), `Budget`, limits, default study names
    config      what a search is: `SearchConfig`, the one tree (settings, recipe changes, metric options, data, run)
    objective   an Optuna trial -> genotype -> metrics -> proxy training (cached by run identity)
    storage     journal or database storage, the study-wide cap, stale trials, worker processes
    outputs     winners, their retraining and export, trials.csv/json, pareto.png, summary.json
    worker      the entry point of a worker process (`python -m prunenas.search.worker CONFIG.json`)

Objectives are metrics (`prunenas.metrics`): by default a Pareto front of validation accuracy (up) and
MACs (down); with `--max` limits, one objective (accuracy) under the limits, which lets a pruner
(median, Hyperband) stop weak candidates from their per-epoch reports. After the search the winners are
retrained with the full recipe, evaluated once on the test set and exported to ONNX. Everything lives in
the study folder: the journal storage (resume = run the same command again), the runs, the tables,
the plot, the winners' genotypes and a summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunenas._lazy import lazy_exports
from prunenas.errors import PrunenasError
from prunenas.search.config import (
    BUDGETS,
    CONFIG_FILE,
    Budget,
    SearchConfig,
    SearchSettings,
    default_study_dir,
    default_study_name,
)

if TYPE_CHECKING:
    from prunenas.search.engine import open_study, run_search
    from prunenas.search.objective import Objective, SurplusTrial, applicable_proposers
    from prunenas.search.outputs import SearchOutcome, Winner, trial_rows
    from prunenas.search.storage import JOURNAL, make_storage

# The engine (torch, optuna) loads on first use: building the command line only needs the settings.
_EXPORTS = {
    "open_study": "prunenas.search.engine",
    "run_search": "prunenas.search.engine",
    "check_limits": "prunenas.search.engine",
    "Objective": "prunenas.search.objective",
    "SurplusTrial": "prunenas.search.objective",
    "applicable_proposers": "prunenas.search.objective",
    "SearchOutcome": "prunenas.search.outputs",
    "Winner": "prunenas.search.outputs",
    "trial_rows": "prunenas.search.outputs",
    "JOURNAL": "prunenas.search.storage",
    "make_storage": "prunenas.search.storage",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BUDGETS",
    "CONFIG_FILE",
    "JOURNAL",
    "Budget",
    "Objective",
    "PrunenasError",
    "SearchConfig",
    "SearchOutcome",
    "SearchSettings",
    "SurplusTrial",
    "Winner",
    "applicable_proposers",
    "default_study_dir",
    "default_study_name",
    "make_storage",
    "open_study",
    "run_search",
    "trial_rows",
]
