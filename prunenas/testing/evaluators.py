"""The contract suite of evaluators (`prunenas.testing.EvaluatorContract`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from prunenas.config import Config, RunSettings
from prunenas.data import DatasetSplits, load_dataset
from prunenas.evaluators import EvaluationContext, Evaluator
from prunenas.recipes import make_recipe
from prunenas.spaces.base import Space
from prunenas.testing import _json_roundtrip, _missing
from prunenas.train import CHECKPOINT, train


# -- evaluators -----------------------------------------------------------------------------------------------
class EvaluatorContract:
    """What every Evaluator must do. Subclass it as `Test...` and define `evaluator` and `space`; `reference`
    (a checkpoint of the space's trained reference; default: one epoch trained here when it needs one)."""

    @pytest.fixture
    def evaluator(self) -> Evaluator:
        _missing(self, "evaluator", "an Evaluator instance")

    @pytest.fixture
    def space(self) -> Space:
        _missing(self, "space", "a Space instance")

    @pytest.fixture
    def reference(self, evaluator: Evaluator, space: Space, tmp_path: Path) -> Path | None:
        if not evaluator.needs_trained:
            return None
        recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1})
        train(space, space.reference(), _digits(), recipe, RunSettings(quiet=True, plot=False), out_dir=tmp_path / "r")
        return tmp_path / "r" / CHECKPOINT

    def test_attributes(self, evaluator: Evaluator, space: Space) -> None:
        assert isinstance(evaluator, Evaluator) and evaluator.name and evaluator.description
        if evaluator.options is not None:  # its own Config, through JSON
            assert isinstance(evaluator.options, Config) and isinstance(
                evaluator.options, evaluator.options_class or ()
            )
            assert type(evaluator.options).from_dict(_json_roundtrip(evaluator.options.to_dict())) == evaluator.options
        _json_roundtrip(evaluator.identity())
        _json_roundtrip(evaluator.describe())
        fixed = evaluator.fixed_genes(space)
        assert set(fixed) <= {g.name for g in space.genes}
        assert all(space.gene(name).reference == value for name, value in fixed.items())

    def test_judges_a_candidate_on_the_validation_split(
        self, evaluator: Evaluator, space: Space, reference: Path | None, tmp_path: Path
    ) -> None:
        why_not = evaluator.serves(space)
        if why_not:
            assert isinstance(why_not, str) and "\n" not in why_not
            pytest.skip(f"{evaluator.name} does not serve {space.name}: {why_not}")
        recipe, settings = make_recipe("proxy", space.recipe, overrides={"epochs": 1}), RunSettings(quiet=True)
        ctx = EvaluationContext(space=space, data=_digits(), recipe=recipe, settings=settings, reference=reference)
        evaluator.prepare(ctx)
        genotype = space.reference()
        result = evaluator.evaluate(genotype, ctx, tmp_path / "a")
        assert result.val_acc is not None and 0.0 <= result.val_acc <= 1.0
        assert result.test_acc is None  # the test split is never seen while candidates are judged
        assert result.wall_time_s >= 0.0 and result.genotype_key == genotype.key
        if not evaluator.trains:  # the same candidate, the same score
            again = evaluator.evaluate(genotype, ctx, tmp_path / "b")
            assert again.val_acc == result.val_acc


@cache
def _digits() -> DatasetSplits:
    return load_dataset("digits", seed=0, train_subset=64, val_size=32)
