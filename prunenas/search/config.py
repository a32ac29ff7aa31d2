"""What a search is: `SearchConfig`, the one tree a search runs from: the search settings, the run
settings, the data, the changes to every candidate's recipe (a partial recipe) and the options of the
metrics that take some. `prunenas search`'s flags are generated from it, `prunenas.search_architectures`
takes the same settings, worker processes receive it as JSON, and its `identity()` decides whether a
study may resume. The search's own settings are in `prunenas.search.settings` (importable from here too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prunenas.config import Config, ConfigError, DataConfig, RunSettings, setting
from prunenas.errors import PrunenasError
from prunenas.evaluators import Evaluator, evaluator_options, get_evaluator
from prunenas.metrics import Limit, get_metric, metric_options
from prunenas.paths import safe_name
from prunenas.prepare import fit_to_data
from prunenas.recipes import PartialRecipe, check_kd
from prunenas.search.settings import (
    BUDGETS,
    DEFAULT_OBJECTIVES,
    FINAL_RECIPES,
    MODES,
    PRUNERS,
    SAMPLERS,
    Budget,
    SearchSettings,
    check_band,
    check_teacher,
    default_study_dir,
    default_study_name,
    typed_limit,
)

__all__ = [  # the settings' names stay importable from here, where the search's configuration is
    "BUDGETS", "DEFAULT_OBJECTIVES", "FINAL_RECIPES", "MODES", "PRUNERS", "SAMPLERS", "Budget", "SearchConfig",
    "SearchSettings", "check_band", "check_teacher", "default_study_dir", "default_study_name", "prepare_search",
    "typed_limit",
]  # fmt: skip

if TYPE_CHECKING:
    from prunenas.spaces.base import Space
    from prunenas.train import Teacher

CONFIG_FILE = "search_config.json"
#: Version of the study-folder layout; studies of other layouts are refused with a one-line hint. Layout 3: the
#: study stores its configuration's identity (`SearchConfig.identity`).
LAYOUT = 3


def _measured_by(search: SearchSettings, score: str) -> set[str]:
    return {*search.resolved_objectives(score), *(lim.metric for lim in (*search.limits(), *search.floors()))}


def _changed_options(plugin: str, options: Config) -> tuple[list[str], str]:
    """The options of a plugin set to other than their defaults, and their flags as one text
    (`--latency-batch and --latency-threads`)."""
    defaults = type(options)().to_dict()
    changed = [k for k, v in options.to_dict().items() if v != defaults.get(k)]
    return changed, " and ".join(f"--{plugin}-{k.replace('_', '-')}" for k in changed)


@dataclass(frozen=True)
class SearchConfig(Config):
    """A search: everything `run_search` and its worker processes need, one tree that round-trips through JSON.
    `prunenas search` generates its flags from it; `identity()` (the space, what the search settings measure,
    the data, the seed, the recipe changes and the options of the metrics measured) decides whether a study
    may resume. The study name, folder, budget and limits are resolved from it (properties)."""

    cli_group: ClassVar[str] = "search"

    space: str = setting("", "name of the space searched", cli=False)
    space_ref: str | None = setting(
        None, "how a worker finds the space again: a name, a factory or a TOML path (default `space`)", cli=False,
        identity=False,
    )  # fmt: skip
    search: SearchSettings = setting(default_factory=SearchSettings, help="the search's own settings")
    recipe: PartialRecipe = setting(
        default_factory=PartialRecipe, help="changes to every candidate's recipe (proxy and final runs)"
    )
    metrics: dict[str, Config] = setting(
        default_factory=dict, help="options of the metrics that take some, by metric name", plugins=metric_options
    )
    evaluators: dict[str, Config] = setting(
        default_factory=dict,
        help="options of the evaluator (--evaluator), by evaluator name",
        plugins=evaluator_options,
    )
    data: DataConfig = setting(default_factory=DataConfig, help="the images")
    run: RunSettings = setting(default_factory=RunSettings, help="how and where the candidates train")
    worker_only: bool = setting(False, "a spawned worker: trials only, no seeding, no final step", cli=False,
                                identity=False)  # fmt: skip

    def check(self) -> None:
        safe_name(self.study, "--study")
        if self.data.val_size == 0:
            raise PrunenasError(
                "--val-size 0 leaves no validation split, and a search ranks its candidates on it (the test set "
                "stays untouched); pass --val-size N with N > 0, or leave it out (a tenth of the training images)"
            )
        check_kd(self.recipe_overrides, self.search.teacher)
        for name, options in self.evaluators.items():
            changed, flags = _changed_options(name, options)
            if name != self.search.evaluator and changed:
                raise ConfigError(
                    f"{flags} {'is an option' if len(changed) == 1 else 'are options'} of --evaluator {name}, not of "
                    f"--evaluator {self.search.evaluator}; add --evaluator {name} or leave "
                    f"{'it' if len(changed) == 1 else 'them'} out"
                )
        measured = _measured_by(self.search, self.score)
        for name, options in self.metrics.items():
            metric = get_metric(name, "--objectives")
            changed, flags = _changed_options(name, options)
            if name not in measured and changed:
                raise ConfigError(
                    f"{flags} {'does' if len(changed) == 1 else 'do'} not apply without a {name} objective or limit "
                    f"(--objectives val_acc,{name}, --max {name}=... or --min ...); leave "
                    f"{'it' if len(changed) == 1 else 'them'} out"
                )
            metric.check_options(options, self.search.limits())

    def evaluator(self) -> Evaluator:
        """The evaluator that judges the candidates, with its options."""
        return get_evaluator(self.search.evaluator, self.evaluators.get(self.search.evaluator))

    def resolve_identity(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The options of every metric measured and of the evaluator, given or not (a default given explicitly
        is the same study), and the budget's recipe preset."""
        identity.pop("evaluators", None)
        if self.budget.recipe_preset is not None:
            identity["recipe_preset"] = self.budget.recipe_preset
        if self.search.evaluator != "scratch":
            identity["evaluator"] = self.evaluator().identity()
        measured = _measured_by(self.search, self.score)
        identity["search"]["objectives"] = list(self.objectives)
        identity["metrics"] = {
            name: options.identity()
            for name in sorted(measured)
            if (options := get_metric(name).options_in(self.metrics)) is not None
        }
        return identity

    def record(self) -> dict[str, Any]:
        """What a study stores of its configuration (checked on resume: `identity`)."""
        return {
            "layout": LAYOUT, "identity": self.identity(), "objectives": list(self.objectives),
            "limits": self.limit_texts(), "config": self.to_dict(),
        }  # fmt: skip

    def limit_texts(self) -> list[str]:
        """The limits as given: macs=0.5x, min macs=0.45x."""
        return [lim.text() for lim in self.limits] + [f"min {lim.text()}" for lim in self.min_limits]

    # -- resolved values ---------------------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.data.dataset

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def study(self) -> str:
        given = self.evaluators.get(self.search.evaluator)
        # the recipe flags given (the budget's recipe preset goes with the budget's name)
        return self.search.study or default_study_name(
            self.search, self.run.seed, self.recipe.to_dict(), given.to_dict() if given is not None else None
        )

    @property
    def out(self) -> Path:
        return Path(self.search.out) if self.search.out else default_study_dir(self.space, self.dataset, self.study)

    @property
    def exports_root(self) -> Path:
        return Path(self.search.exports)

    @property
    def budget(self) -> Budget:
        from prunenas.tasks import task_for_dataset

        return self.search.resolved_budget(self.data.train_subset, task_for_dataset(self.data.dataset))

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        """The recipe settings the user changed, under the budget's recipe preset unless --preset names another
        (every candidate's and winner's recipe takes them)."""
        given = self.recipe.to_dict()
        preset = self.budget.recipe_preset
        return {"preset": preset, **given} if preset and given.get("preset") is None else given

    @property
    def gpus(self) -> tuple[str, ...]:
        return tuple(g.strip() for g in self.search.gpus.split(",")) if self.search.gpus else ()

    @property
    def proposer_names(self) -> tuple[str, ...] | None:
        return self.search.proposers or None

    @property
    def limits(self) -> tuple[Limit, ...]:
        """--max limits, plus the --max-macs-ratio / --max-macs aliases."""
        return self.search.limits()

    @property
    def min_limits(self) -> tuple[Limit, ...]:
        return self.search.floors()

    def check_scores(self) -> None:
        """Refuse an objective or limit that is another task's score (val_map on a segmentation dataset)."""
        from prunenas.tasks import all_tasks, task_for_dataset  # torch: not at the command line's start-up

        scores = {t.metric: t for t in all_tasks().values()}
        for name in _measured_by(self.search, self.score):
            if name in scores and name != self.score:
                raise ConfigError(
                    f"--objectives/--max/--min name {name}, the score of {scores[name].name} runs, but --dataset "
                    f"{self.data.dataset} poses a {task_for_dataset(self.data.dataset)} task, scored by {self.score}; "
                    f"use {self.score}"
                )

    @property
    def score(self) -> str:
        """The metric of the dataset's task (val_acc, val_miou, val_map): the default accuracy objective."""
        from prunenas.tasks import get_task, task_for_dataset

        return get_task(task_for_dataset(self.data.dataset)).metric

    @property
    def objectives(self) -> tuple[str, ...]:
        """The metrics optimised, in order: as given, else the task's score and MACs (the score alone under
        limits)."""
        return self.search.resolved_objectives(self.score)

    @property
    def limited_metrics(self) -> tuple[str, ...]:
        """The metrics a --max or --min limit is on (each once)."""
        return tuple(dict.fromkeys(lim.metric for lim in (*self.limits, *self.min_limits)))

    @property
    def constrained(self) -> bool:
        return bool(self.limits or self.min_limits)

    @property
    def single_objective(self) -> bool:
        return len(self.objectives) == 1

    def run_settings(self, **changes: Any) -> RunSettings:
        """The settings of the winners' final runs (with `changes`); `proxy_settings` for the candidates."""
        return self.run.replace(**changes)

    def proxy_settings(self) -> RunSettings:
        """A candidate's proxy run: quiet, no plot, no test set, validated at the end only (it is ranked on
        the final model) unless a pruner needs the per-epoch reports or --eval-every was given."""
        per_epoch = self.single_objective and self.search.pruner != "none"
        every = self.run.eval_every or (1 if per_epoch else self.budget.proxy_epochs)
        return self.run_settings(quiet=True, plot=False, test_every_epoch=False, eval_every=every)

    def load_teacher(self, space: Space, num_classes: int) -> Teacher | None:
        """The `prunenas.train.Teacher` the candidates distill from (checked: `prunenas.train.load_teacher`),
        None without --teacher."""
        teacher, reference = self.search.teacher, self.search.reference
        if teacher is None:
            return None
        from prunenas.train import load_teacher

        if teacher == "reference":
            assert reference is not None  # check_teacher
            return load_teacher(space, reference, num_classes, flag="--reference", given_as="reference")
        return load_teacher(space, teacher, num_classes)

    # -- files -----------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> SearchConfig:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PrunenasError(f"cannot read the search config {str(p)!r} ({exc}); rerun the search command") from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(p)
        return p


def search_space_ref(space: Space, given: str | None) -> str:
    """How worker processes find the searched space again: the value that named it (a TOML path made
    absolute, a factory), or the space's name when it is not the space that value names (fitted to the data)."""
    from prunenas.spaces.traced import is_factory_name

    if given is None:
        return space.source or space.name
    if (given.endswith(".toml") or "/" in given) and not is_factory_name(given):
        return str(Path(given).resolve())
    return given


def prepare_search(
    space: Space | str,
    *,
    search: SearchSettings,
    data: DataConfig,
    run: RunSettings,
    recipe: Mapping[str, Any] | Any = None,
    metrics: Mapping[str, Any] | None = None,
    evaluators: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> tuple[SearchConfig, Space]:
    """The search of `space` (a space, or the name, factory or TOML path that names it) on `data`, fitted to
    the data's image size (`prunenas.prepare.fit_to_data`), with its settings checked against the space; and
    the space it searches. How `prunenas search` and `prunenas.search_architectures` set a search up."""
    from prunenas.spaces import get_space  # the spaces load torch: not at the command line's start-up
    from prunenas.tasks import task_for_dataset

    named = get_space(space) if isinstance(space, str) else space
    fitted, _ = fit_to_data(named, image_size=data.image_size, quiet=quiet, dataset=data.dataset)
    if search.min_density != type(search).min_density and fitted.kind != "density":
        raise ConfigError(
            f"--min-density {search.min_density:g} does not apply to --space {fitted.name} (a {fitted.kind} space: "
            "its genes are not densities); leave it out"
        )
    given = space if isinstance(space, str) else None
    ref = search_space_ref(fitted, given if fitted is named else fitted.name)
    config = SearchConfig(
        space=fitted.name, space_ref=ref, search=search, recipe=recipe or {},  # type: ignore[arg-type]
        metrics=dict(metrics or {}), evaluators=dict(evaluators or {}),
        data=data.replace(
            train_subset=search.resolved_budget(data.train_subset, task_for_dataset(data.dataset)).train_subset
        ),
        run=run,
    )  # fmt: skip
    config.check_scores()
    return config, fitted
