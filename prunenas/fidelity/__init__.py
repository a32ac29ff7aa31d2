"""`prunenas fidelity`: how well evaluators rank candidates as real training does, on a user's space and data.

    settings    the command's settings (FidelitySettings) and the evaluators it compares (--evaluators specs)
    stats       Kendall's tau-b, Spearman's rho, bootstrap intervals (numpy only)
    candidates  genotypes at several MACs levels, from the proposers and at random
    study       the study run: scores, truth runs (resumable), the report written to the study folder
    report      the statistics per evaluator and the ceiling, as a table, JSON and a scatter plot

The truth is each candidate trained from scratch with the proxy recipe at --truth-epochs on several seeds;
the ceiling is the truth's Kendall tau against itself under another seed (GUIDE section 12).

Names load on first use: the command line builds the flags from `settings` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunenas._lazy import lazy_exports

if TYPE_CHECKING:
    from prunenas.fidelity.settings import EvaluatorSpec, FidelitySettings, evaluator_specs
    from prunenas.fidelity.stats import average_ranks, kendall_tau_b, spearman_rho
    from prunenas.fidelity.study import FidelityOutcome, run_fidelity

_EXPORTS = {
    "EvaluatorSpec": "prunenas.fidelity.settings",
    "FidelitySettings": "prunenas.fidelity.settings",
    "evaluator_specs": "prunenas.fidelity.settings",
    "average_ranks": "prunenas.fidelity.stats",
    "kendall_tau_b": "prunenas.fidelity.stats",
    "spearman_rho": "prunenas.fidelity.stats",
    "FidelityOutcome": "prunenas.fidelity.study",
    "run_fidelity": "prunenas.fidelity.study",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "EvaluatorSpec", "FidelityOutcome", "FidelitySettings", "average_ranks", "evaluator_specs", "kendall_tau_b",
    "run_fidelity", "spearman_rho",
]  # fmt: skip
