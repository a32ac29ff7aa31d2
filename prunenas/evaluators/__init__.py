"""Evaluators: how a search judges a candidate genotype (`prunenas search --evaluator NAME`).

    base      the Evaluator plugin class, its context and the registry (entry-point group prunenas.evaluators)
    builtin   scratch (a from-scratch proxy run, the default), inherit-bn (adaptive BatchNorm on weights cut
              from a trained reference) and callable (a Python function, search_architectures(evaluate=fn))

A search records which evaluator scored each candidate and what it cost; `prunenas fidelity` measures how
well an evaluator's scores rank candidates as real training does.
"""

from __future__ import annotations

from prunenas.evaluators.base import (
    EvaluationContext,
    Evaluator,
    clear_cache,
    evaluator_class,
    evaluator_names,
    evaluator_options,
    get_evaluator,
)

__all__ = [
    "EvaluationContext",
    "Evaluator",
    "clear_cache",
    "evaluator_class",
    "evaluator_names",
    "evaluator_options",
    "get_evaluator",
]
