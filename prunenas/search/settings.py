"""The search's own settings (`SearchSettings`, one field per `prunenas search` flag of the search group),
its budgets, and the checks and names that follow from them (limits, teacher, default study name)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from prunenas.config import Config, ConfigError, fingerprint, setting
from prunenas.evaluators import evaluator_class
from prunenas.metrics import Limit, get_metric
from prunenas.recipes import TEACHER_HELP

SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("none", "median", "hyperband")
MODES = ("genes", "proposers")
FINAL_RECIPES = ("scratch-e", "scratch-b")
DEFAULT_OBJECTIVES = ("val_acc", "macs")


@dataclass(frozen=True)
class Budget:
    """How much a search spends: trials, proxy length, proposer seeds, winners and their retraining."""

    trials: int
    proxy_epochs: int
    seed_targets: tuple[float, ...]  # MACs ratios (density: densities) at which proposers seed the study
    top_k: int
    final_epochs: int | None  # None: the recipe's own (160 for CIFAR)
    train_subset: int | None = None
    #: The recipe preset (`prunenas.recipes.PRESETS`) of its candidates and winners, under the recipe flags;
    #: None: the space's own recipe.
    recipe_preset: str | None = None


#: Training images of a smoke search on a segmentation or detection dataset (--train-subset changes it).
SMOKE_DENSE_IMAGES = 160

BUDGETS: dict[str, Budget] = {
    # About two minutes on a 2-core CPU with the embedded digits set: 8 candidates of 3 epochs, with a recipe
    # that learns in so few steps (a classification dataset's; dense tasks keep their recipes).
    "smoke": Budget(trials=8, proxy_epochs=3, seed_targets=(0.5,), top_k=1, final_epochs=8, recipe_preset="short"),
    # An hour or two on one GPU for ResNet-56 on CIFAR-10.
    "fast": Budget(trials=40, proxy_epochs=8, seed_targets=(0.3, 0.5, 0.7), top_k=3, final_epochs=60),
    # The Rethinking protocol for the winners: full 160-epoch retraining.
    "paper": Budget(trials=120, proxy_epochs=15, seed_targets=(0.2, 0.35, 0.5, 0.65, 0.8), top_k=5, final_epochs=None),
}


@dataclass(frozen=True)
class SearchSettings(Config):
    """The `prunenas search` flags (beside the data, recipe, run and metric flags). Its identity is what makes
    the trials of two studies comparable (a resumed study must match it): the mode, objectives, limits, proxy
    length, reference, teacher and density floor; the others extend a study (--trials), say how it runs or
    what happens after it, and the preset resolves into its values (`resolve_identity`)."""

    cli_group: ClassVar[str] = "search"

    budget: str = setting(
        "fast",
        "preset: smoke (minutes on a CPU, with the short recipe preset; on a segmentation or detection dataset 160 "
        "training images and the task's recipe), fast (hours on a GPU), paper (full retraining)",
        choices=tuple(BUDGETS),
        identity=False,
    )
    trials: int | None = setting(
        None, "trials in the study (study-wide; a resumed study counts its old ones)", low=1, identity=False
    )
    proxy_epochs: int | None = setting(None, "epochs per candidate (proxy recipe)", low=1, metavar="E")
    top_k: int | None = setting(
        None, "winners retrained with the full recipe and exported", low=1, metavar="K", identity=False
    )
    final_epochs: int | None = setting(
        None, "epochs of the final retraining (E of scratch-b)", low=1, metavar="E", identity=False
    )
    timeout: float | None = setting(
        None, "stop starting new trials after this many seconds", low=0.0, low_open=True, identity=False
    )
    mode: str = setting("genes", "what Optuna samples: every gene, or a proposer and its target", choices=MODES)
    sampler: str = setting("tpe", "Optuna sampler", choices=SAMPLERS, identity=False)
    pruner: str = setting("none", "stop weak candidates early (single objective only)", choices=PRUNERS, identity=False)
    objectives: tuple[str, ...] = setting(
        (), "metrics to optimise, e.g. val_acc,macs (default val_acc,macs; val_acc alone under a --max or --min limit)",
        metavar="M,M",
    )  # fmt: skip
    max: tuple[str, ...] = setting(
        (), "limit METRIC=VALUE, absolute (params=1.2e6, macs=50M) or relative to the reference (macs=0.5x); "
        "repeatable", metavar="METRIC=VALUE",
    )  # fmt: skip
    max_macs_ratio: float | None = setting(
        None, "alias of --max macs=Rx", low=0.0, high=1.0, low_open=True, metavar="R"
    )
    max_macs: int | None = setting(None, "alias of --max macs=N", low=1, metavar="N")
    min: tuple[str, ...] = setting(
        (), "lower limit METRIC=VALUE, in the forms of --max; with a --max on the same metric it keeps the search "
        "in a band (--min macs=0.45x --max macs=0.55x: candidates near one cost level); a candidate below it is "
        "recorded infeasible and not trained; repeatable", metavar="METRIC=VALUE",
    )  # fmt: skip
    proposers: tuple[str, ...] = setting(
        (), "proposers that seed (genes) or are sampled (proposers mode)", metavar="A,B", identity=False
    )
    seed_targets: tuple[float, ...] = setting(
        (), "MACs ratios (density spaces: densities) at which proposers seed the study (default: the budget's)",
        low=0.0, high=1.0, low_open=True, metavar="R,R", identity=False,
    )  # fmt: skip
    seeding: bool = setting(
        True, "genes mode: seed the study with the proposers' genotypes before sampling", identity=False
    )
    reference: str | None = setting(
        None, "trained reference: adds proposers that score trained weights", metavar="CKPT"
    )
    teacher: str | None = setting(
        None,
        TEACHER_HELP
        + "; every candidate's proxy run and the winners' retraining distill; `reference`: the --reference "
        "checkpoint (default: none)",
        metavar="CKPT",
    )
    final_recipe: str = setting("scratch-e", "recipe of the winners' retraining", choices=FINAL_RECIPES, identity=False)
    final: bool = setting(True, "retrain the winners with the full recipe and export them", identity=False)
    export: bool = setting(True, "export the retrained winners to ONNX", identity=False)
    exports: str = setting("exports", "root of exports/<space>/<study>/", identity=False, metavar="DIR")
    study: str | None = setting(
        None, "study name (default from budget, mode, sampler, seed and limits)", identity=False
    )
    out: str | None = setting(
        None, "study folder (default runs/search/SPACE-DATASET-STUDY); rerun to resume", identity=False
    )
    storage: str | None = setting(
        None, "Optuna RDB storage URL (default: a journal file in the study folder)", identity=False
    )
    workers: int = setting(1, "worker processes here (N per GPU with --gpus)", low=1, high=1024, identity=False)
    gpus: str | None = setting(None, "one group of --workers processes per listed GPU", metavar="0,1", identity=False)
    gpus_per_trial: int = setting(
        1, "train each candidate data-parallel on N GPUs: --gpus is cut into groups of N, one torchrun group each "
        "(without --gpus: N processes share the CPU, gloo)", low=1, high=64, identity=False, metavar="N",
    )  # fmt: skip
    heartbeat: float = setting(
        60.0, "database storage: heartbeat of running trials; one silent for 3x this is failed and retried",
        low=0.0, low_open=True, identity=False, metavar="SECONDS",
    )  # fmt: skip
    min_density: float = setting(
        0.01, "density spaces: lowest density the search samples", low=0.0, high=1.0, low_open=True
    )
    evaluator: str = setting(
        "scratch", "how each candidate is judged: scratch (a from-scratch proxy run of --proxy-epochs), inherit-bn "
        "(channels cut from a trained reference, BatchNorm re-estimated: seconds per candidate; needs --reference "
        "or --pretrain-epochs) or a plugin's (see `prunenas evaluators`)", metavar="NAME", omit_default=True,
    )  # fmt: skip
    promote: str | None = setting(
        None, "EVALUATOR:FRACTION: judge the best FRACTION of the cheaply scored candidates again with EVALUATOR "
        "(scratch: a from-scratch proxy run of --proxy-epochs) and pick the winners by that ranking, e.g. "
        "scratch:0.25", metavar="EVALUATOR:F", omit_default=True, identity=False,
    )  # fmt: skip
    pretrain_epochs: int | None = setting(
        None, "train the reference that an evaluator scoring trained weights needs, this many epochs with the "
        "proxy recipe (once per study; instead of --reference)", low=1, metavar="E", omit_default=True,
    )  # fmt: skip
    conditions: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        "pruner": lambda s: None if s.single_objective() else (
            "to a search of several objectives (Optuna's pruners need a single objective: pass --objectives "
            "val_acc, or a --max/--min limit, which makes accuracy the only objective)"
        ),
        **dict.fromkeys(("seed_targets", "seeding"), lambda s: None if s.mode == "genes" else (
            "with --mode proposers (it samples a proposer and its target in every trial; seeding is for --mode genes)"
        )),
        "proposers": lambda s: None if s.mode == "proposers" or s.seeding else (
            "with --no-seeding in --mode genes (no proposer runs: the sampler picks every gene)"
        ),
        "heartbeat": lambda s: None if s.storage else (
            "without --storage (the study folder's journal needs no heartbeat: a trial whose process is gone is "
            "found by its process id and retried)"
        ),
        **dict.fromkeys(("final_epochs", "final_recipe"), lambda s: None if s.final else (
            "with --no-final (no winner is retrained)"
        )),
    }  # fmt: skip

    def single_objective(self) -> bool:
        """Whether the search optimises one value (`SearchConfig.single_objective`, before it is resolved)."""
        return len(self.objectives) == 1 or (
            not self.objectives and bool(self.max or self.min or self.max_macs or self.max_macs_ratio)
        )

    def check(self) -> None:
        needs_trained = evaluator_class(self.evaluator).needs_trained
        if needs_trained and self.reference is None and self.pretrain_epochs is None:
            raise ConfigError(
                f"--evaluator {self.evaluator} scores candidates cut from trained weights: pass --reference CKPT (a "
                "`prunenas pretrain` checkpoint) or --pretrain-epochs N"
            )
        if self.pretrain_epochs is not None and (not needs_trained or self.reference is not None):
            why = "with --reference (the reference is given)" if self.reference else (
                f"with --evaluator {self.evaluator} (it needs no trained reference)"
            )  # fmt: skip
            raise ConfigError(f"--pretrain-epochs {self.pretrain_epochs} does not apply {why}; leave it out")
        self.promotion()
        if self.evaluator != "scratch" and self.gpus_per_trial > 1:
            raise ConfigError(
                f"--gpus-per-trial trains each candidate data-parallel; --evaluator {self.evaluator} trains none: "
                "drop --gpus-per-trial (use --workers)"
            )
        if self.max_macs is not None and self.max_macs_ratio is not None:
            raise ConfigError("give either --max-macs N or --max-macs-ratio R, not both")
        for text in self.max:
            Limit.parse(text)
        check_band(self.limits(), self.floors(), self.max_macs_ratio, self.max_macs)
        for name in self.objectives:
            get_metric(name)
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"--objectives lists a metric twice: {','.join(self.objectives)}")
        if self.gpus is not None and not re.fullmatch(r"\d+(,\d+)*", self.gpus.replace(" ", "")):
            raise ConfigError(f"--gpus takes GPU indices like 0,1 (got {self.gpus!r})")
        if self.gpus_per_trial > 1:
            n = len(self.gpus.split(",")) if self.gpus else self.gpus_per_trial
            if n % self.gpus_per_trial:
                raise ConfigError(
                    f"--gpus {self.gpus} lists {n} GPU(s), not a multiple of --gpus-per-trial {self.gpus_per_trial}; "
                    "list whole groups"
                )
            if self.workers > 1:
                raise ConfigError("--gpus-per-trial N runs one worker group per N GPUs: drop --workers")
        check_teacher(self.teacher, self.reference, self.gpus_per_trial)

    def promotion(self) -> tuple[str, float] | None:
        """(evaluator, fraction) of --promote, checked; None without it."""
        if self.promote is None:
            return None
        name, sep, amount = self.promote.partition(":")
        try:
            fraction = float(amount)
        except ValueError:
            fraction = math.nan
        if not sep or not name or not (0.0 < fraction <= 1.0):
            raise ConfigError(
                f"--promote {self.promote!r} must be EVALUATOR:FRACTION with FRACTION in (0, 1], e.g. scratch:0.25"
            )
        if evaluator_class(name, "--promote").needs_trained:
            raise ConfigError(f"--promote {self.promote}: {name} needs trained weights; promote to scratch")
        if name == self.evaluator:
            raise ConfigError(
                f"--promote {self.promote} judges again with the evaluator that scored them (--evaluator "
                f"{self.evaluator}): promote to another, e.g. --evaluator inherit-bn --promote scratch:0.25"
            )
        return name, fraction

    def limits(self) -> tuple[Limit, ...]:
        """--max limits, with the --max-macs/--max-macs-ratio aliases."""
        out = [Limit.parse(t) for t in self.max]
        if self.max_macs_ratio is not None:
            out.append(Limit("macs", self.max_macs_ratio, relative=True))
        if self.max_macs is not None:
            out.append(Limit("macs", float(self.max_macs)))
        metrics = [limit.metric for limit in out]
        if len(set(metrics)) != len(metrics):
            raise ConfigError(f"two limits on the same metric ({', '.join(metrics)}); give one each")
        return tuple(out)

    def floors(self) -> tuple[Limit, ...]:
        """--min limits."""
        out = tuple(Limit.parse(t, "--min") for t in self.min)
        metrics = [limit.metric for limit in out]
        if len(set(metrics)) != len(metrics):
            raise ConfigError(f"--min gives two lower limits on the same metric ({', '.join(metrics)}); give one each")
        return out

    def resolved_objectives(self, score: str = "val_acc") -> tuple[str, ...]:
        """The metrics optimised, in order: as given, else the task's score (`score`: val_acc, val_miou, val_map)
        and MACs (the score alone under limits)."""
        limited = self.max or self.min or self.max_macs or self.max_macs_ratio
        return self.objectives or ((score,) if limited else (score, *DEFAULT_OBJECTIVES[1:]))

    def resolve_identity(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The objectives and limits as resolved (the --max-macs aliases are --max macs=...) and the proxy
        length of the preset when not given."""
        for name in ("objectives", "max", "min", "max_macs", "max_macs_ratio", "proxy_epochs"):
            identity.pop(name, None)
        identity["objectives"] = list(self.resolved_objectives())
        identity["limits"] = [lim.text() for lim in self.limits()] + [f"min {lim.text()}" for lim in self.floors()]
        identity["proxy_epochs"] = self.proxy_epochs or BUDGETS[self.budget].proxy_epochs
        return identity

    def resolved_budget(self, train_subset: int | None, task: str = "classification") -> Budget:
        """The preset with the flags that change it; a smoke search of a segmentation or detection dataset trains
        on `SMOKE_DENSE_IMAGES` images unless --train-subset says otherwise (its models are far slower per image
        than the CIFAR ones the preset's minutes are for), with its task's recipe (no recipe preset)."""
        budget = BUDGETS[self.budget]
        if self.budget == "smoke" and task != "classification":
            budget = replace(budget, recipe_preset=None)
            if train_subset is None:
                train_subset = SMOKE_DENSE_IMAGES
        changes: dict[str, Any] = {
            "trials": self.trials,
            "proxy_epochs": self.proxy_epochs,
            "top_k": self.top_k,
            "final_epochs": self.final_epochs,
            "train_subset": train_subset,
            "seed_targets": (self.seed_targets or None) if self.seeding else (),
        }
        return replace(budget, **{k: v for k, v in changes.items() if v is not None})


def check_teacher(teacher: str | None, reference: str | None, gpus_per_trial: int) -> None:
    """Refuse `--teacher reference` without the --reference it names, and a teacher with data-parallel
    candidates (the group's other ranks train without one)."""
    if teacher == "reference" and reference is None:
        raise ConfigError(
            "--teacher reference distills from the space's trained reference: pass --reference CKPT with it, or "
            "--teacher CKPT"
        )
    if teacher is not None and gpus_per_trial > 1:
        raise ConfigError("--teacher trains each candidate on one device: drop --gpus-per-trial (use --workers)")


def typed_limit(limit: Limit, max_macs_ratio: float | None = None, max_macs: int | None = None) -> tuple[str, str]:
    """(a limit as it was typed, the flag that changes it): `--max macs=0.5`, or the alias `--max-macs-ratio 0.5`
    / `--max-macs N` that made it (pass the alias values when they were given)."""
    alias = not limit.lower and limit.metric == "macs"
    if alias and limit.relative and max_macs_ratio is not None and limit.value == max_macs_ratio:
        return f"--max-macs-ratio {max_macs_ratio:g}", "--max-macs-ratio"
    if alias and not limit.relative and max_macs is not None and limit.value == max_macs:
        return f"--max-macs {max_macs}", "--max-macs"
    return f"{limit.flag} {limit.text()}", f"{limit.flag} {limit.metric}"


def check_band(
    limits: Sequence[Limit], floors: Sequence[Limit], max_macs_ratio: float | None = None, max_macs: int | None = None
) -> None:
    """Refuse a --min that is not below the --max on the same metric (when both are absolute or both relative,
    so comparable before the reference is measured; `check_limits` compares the rest once it is)."""
    for floor in floors:
        for limit in limits:
            if limit.metric == floor.metric and limit.relative == floor.relative and floor.value >= limit.value:
                ceiling, flag = typed_limit(limit, max_macs_ratio, max_macs)
                raise ConfigError(
                    f"--min {floor.text()} is not below {ceiling}: no candidate could be in between; "
                    f"lower --min {floor.metric} or raise {flag}"
                )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text)


def default_study_name(
    settings: SearchSettings,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    evaluator_options: Mapping[str, Any] | None = None,
) -> str:
    """budget-mode-sampler-sSEED, then the limits, the objectives when not the default, and a hash of the
    proxy length, seed targets, recipe changes and teacher the user gave (so other settings never resume the
    wrong study; the hash covers what it covered when it was introduced, so names stay valid); an evaluator
    other than scratch by name, its options given and its reference in the hash."""
    parts = [settings.budget, settings.mode, settings.sampler, f"s{seed}"]
    for limit in settings.limits():
        parts.append(f"max{limit.value:g}" if limit.metric == "macs" and limit.relative else f"max-{limit.text()}")
    parts.extend(f"min-{floor.text()}" for floor in settings.floors())
    if settings.objectives and settings.objectives != DEFAULT_OBJECTIVES:
        parts.append("+".join(settings.objectives))
    if settings.evaluator != "scratch":  # candidates judged otherwise: another study
        parts.append(settings.evaluator)
    # --trials, --top-k and --final-epochs extend or finish the same study; these change what it measures:
    changed: dict[str, Any] = {"proxy_epochs": settings.proxy_epochs} if settings.proxy_epochs else {}
    if settings.seed_targets or not settings.seeding:  # other seeds: another study, not a resumed one
        changed["seed_targets"] = list(settings.seed_targets) if settings.seeding else []
    changed.update({f"recipe.{k}": v for k, v in (overrides or {}).items() if v is not None})
    if settings.teacher is not None:  # distilled candidates: another study
        changed["teacher"] = settings.teacher
    changed.update({f"evaluator.{k}": v for k, v in (evaluator_options or {}).items()})
    if settings.pretrain_epochs is not None or (settings.evaluator != "scratch" and settings.reference is not None):
        changed["reference"] = settings.reference or f"pretrain {settings.pretrain_epochs}"
    if changed:
        parts.append(fingerprint(changed, length=6))
    return _safe("-".join(parts))


def default_study_dir(space: str, dataset: str, study: str) -> Path:
    return Path("runs") / "search" / _safe(f"{space}-{dataset}-{study}")
