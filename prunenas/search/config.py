"""What a search is: the user-facing `SearchSettings` (one field per `prunenas search` flag) and the
resolved `SearchConfig` that `run_search` and every worker process run from (JSON round trip).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from prunenas.config import Config, ConfigError, DataConfig, RunSettings, setting
from prunenas.errors import PrunenasError
from prunenas.metrics import Limit, get_metric
from prunenas.paths import safe_name
from prunenas.recipes import TEACHER_HELP

SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("none", "median", "hyperband")
MODES = ("genes", "proposers")
FINAL_RECIPES = ("scratch-e", "scratch-b")
DEFAULT_OBJECTIVES = ("val_acc", "macs")
CONFIG_FILE = "search_config.json"
#: Version of the study-folder layout; studies of other layouts are refused with a one-line hint.
LAYOUT = 2


@dataclass(frozen=True)
class Budget:
    """How much a search spends: trials, proxy length, proposer seeds, winners and their retraining."""

    trials: int
    proxy_epochs: int
    seed_targets: tuple[float, ...]  # MACs ratios (density: densities) at which proposers seed the study
    top_k: int
    final_epochs: int | None  # None: the recipe's own (160 for CIFAR)
    train_subset: int | None = None


BUDGETS: dict[str, Budget] = {
    # About two minutes on a 2-core CPU with the embedded digits set: 8 candidates of 3 epochs.
    "smoke": Budget(trials=8, proxy_epochs=3, seed_targets=(0.5,), top_k=1, final_epochs=8),
    # An hour or two on one GPU for ResNet-56 on CIFAR-10.
    "fast": Budget(trials=40, proxy_epochs=8, seed_targets=(0.3, 0.5, 0.7), top_k=3, final_epochs=60),
    # The Rethinking protocol for the winners: full 160-epoch retraining.
    "paper": Budget(trials=120, proxy_epochs=15, seed_targets=(0.2, 0.35, 0.5, 0.65, 0.8), top_k=5, final_epochs=None),
}


@dataclass(frozen=True)
class SearchSettings(Config):
    """The `prunenas search` flags (beside the data, recipe and run flags)."""

    cli_group: ClassVar[str] = "search"

    budget: str = setting(
        "fast",
        "preset: smoke (minutes on a CPU), fast (hours on a GPU), paper (full retraining)",
        choices=tuple(BUDGETS),
    )
    trials: int | None = setting(None, "trials in the study (study-wide; a resumed study counts its old ones)", low=1)
    proxy_epochs: int | None = setting(None, "epochs per candidate (proxy recipe)", low=1, metavar="E")
    top_k: int | None = setting(None, "winners retrained with the full recipe and exported", low=1, metavar="K")
    final_epochs: int | None = setting(None, "epochs of the final retraining (E of scratch-b)", low=1, metavar="E")
    timeout: float | None = setting(None, "stop starting new trials after this many seconds", low=0.0, low_open=True)
    mode: str = setting("genes", "what Optuna samples: every gene, or a proposer and its target", choices=MODES)
    sampler: str = setting("tpe", "Optuna sampler", choices=SAMPLERS)
    pruner: str = setting("none", "stop weak candidates early (single objective only)", choices=PRUNERS)
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
        (), "proposers that seed (genes) or are sampled (proposers mode)", metavar="A,B"
    )
    seed_targets: tuple[float, ...] = setting(
        (), "MACs ratios (density spaces: densities) at which proposers seed the study (default: the budget's)",
        low=0.0, high=1.0, low_open=True, metavar="R,R",
    )  # fmt: skip
    seeding: bool = setting(True, "genes mode: seed the study with the proposers' genotypes before sampling")
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
    final_recipe: str = setting("scratch-e", "recipe of the winners' retraining", choices=FINAL_RECIPES)
    final: bool = setting(True, "retrain the winners with the full recipe and export them", identity=False)
    export: bool = setting(True, "export the retrained winners to ONNX", identity=False)
    exports: str = setting("exports", "root of exports/<space>/<study>/", identity=False, metavar="DIR")
    study: str | None = setting(None, "study name (default from budget, mode, sampler, seed and limits)")
    out: str | None = setting(None, "study folder (default runs/search/SPACE-DATASET-STUDY); rerun to resume")
    storage: str | None = setting(None, "Optuna RDB storage URL (default: a journal file in the study folder)")
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
    latency_batch: int = setting(1, "batch size of the latency metric", low=1, high=4096, metavar="N")
    latency_threads: int | None = setting(
        None, "intra-op threads of the latency metric (default: one per core this process may use; on a small "
        "shared machine 1 thread measures far more repeatably)", low=1, high=1024, metavar="N",
    )  # fmt: skip
    latency_provider: str = setting(
        "cpu", "runtime of the latency metric: ONNX Runtime cpu, cuda or tensorrt, or torch (eager)",
        choices=("cpu", "cuda", "tensorrt", "torch"),
    )  # fmt: skip
    latency_predictor: bool = setting(
        False,
        "with --max latency=...: predict each candidate's latency first (a predictor calibrated once per space by "
        "timing 24 genotypes, cached) and record it infeasible untimed and untrained when the prediction is over "
        "the limit by more than the predictor's 90th-percentile error; others are timed",
        identity=False,
    )

    conditions: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        **dict.fromkeys(("latency_batch", "latency_threads", "latency_provider"), lambda s: s._unless_latency()),
        "latency_predictor": lambda s: None if any(lim.metric == "latency" for lim in s.limits()) else (
            "without a --max latency=... limit (it discards the candidates predicted over that limit untimed)"
        ),
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

    def _unless_latency(self) -> str | None:
        """None when latency is measured (an objective or a limit), else why the latency options do not apply."""
        metrics = [*self.objectives, *(lim.metric for lim in (*self.limits(), *self.floors()))]
        if any(m.startswith("latency") for m in metrics):
            return None
        return "without a latency objective or limit (--objectives val_acc,latency, --max latency=8ms or --min ...)"

    def single_objective(self) -> bool:
        """Whether the search optimises one value (`SearchConfig.single_objective`, before it is resolved)."""
        return len(self.objectives) == 1 or (
            not self.objectives and bool(self.max or self.min or self.max_macs or self.max_macs_ratio)
        )

    def check(self) -> None:
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

    def resolved_budget(self, train_subset: int | None) -> Budget:
        budget = BUDGETS[self.budget]
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


def default_study_name(settings: SearchSettings, seed: int, overrides: Mapping[str, Any] | None = None) -> str:
    """budget-mode-sampler-sSEED, then the limits, the objectives when not the default, and a hash of the
    proxy length and recipe values the user changed (so other settings never resume the wrong study)."""
    parts = [settings.budget, settings.mode, settings.sampler, f"s{seed}"]
    for limit in settings.limits():
        parts.append(f"max{limit.value:g}" if limit.metric == "macs" and limit.relative else f"max-{limit.text()}")
    parts.extend(f"min-{floor.text()}" for floor in settings.floors())
    if settings.objectives and settings.objectives != DEFAULT_OBJECTIVES:
        parts.append("+".join(settings.objectives))
    # --trials, --top-k and --final-epochs extend or finish the same study; these change what it measures:
    changed: dict[str, Any] = {"proxy_epochs": settings.proxy_epochs} if settings.proxy_epochs else {}
    if settings.seed_targets or not settings.seeding:  # other seeds: another study, not a resumed one
        changed["seed_targets"] = list(settings.seed_targets) if settings.seeding else []
    changed.update({f"recipe.{k}": v for k, v in (overrides or {}).items() if v is not None})
    if settings.teacher is not None:  # distilled candidates: another study
        changed["teacher"] = settings.teacher
    if changed:
        from prunenas.config import fingerprint

        parts.append(fingerprint(changed, length=6))
    return _safe("-".join(parts))


def default_study_dir(space: str, dataset: str, study: str) -> Path:
    return Path("runs") / "search" / _safe(f"{space}-{dataset}-{study}")


@dataclass(frozen=True)
class SearchConfig:
    """A resolved search: everything `run_search` and its worker processes need, JSON round-trippable."""

    space: str
    dataset: str
    study: str
    out: Path
    budget: Budget
    budget_name: str = "fast"
    mode: str = "genes"
    sampler: str = "tpe"
    pruner: str = "none"
    seed: int = 0
    objective_names: tuple[str, ...] = ()  # as given; empty: val_acc,macs (val_acc alone when limited)
    max_limits: tuple[Limit, ...] = ()  # as given with --max (see `limits` for the aliases)
    max_macs: int | None = None  # alias: a limit of max_macs MACs
    max_macs_ratio: float | None = None  # alias: a limit of max_macs_ratio x the reference's MACs
    min_limits: tuple[Limit, ...] = ()  # lower limits (--min)
    proposer_names: tuple[str, ...] | None = None  # None: every applicable proposer
    reference: str | None = None
    teacher: str | None = None  # a checkpoint, or "reference" (= `reference`): proxies and finals distill from it
    final_recipe: str = "scratch-e"
    final: bool = True
    export: bool = True
    exports_root: Path = Path("exports")
    storage: str | None = None
    timeout: float | None = None
    device: str = "auto"
    quiet: bool = False
    min_density: float = 0.01
    recipe_overrides: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1  # processes on this machine (per GPU when gpus is set)
    gpus: tuple[str, ...] = ()
    gpus_per_trial: int = 1  # > 1: each trial trains data-parallel in a torchrun group of this many processes
    heartbeat: float = 60.0  # seconds between heartbeats of a running trial (database storage)
    worker_only: bool = False  # a spawned worker: run trials, no seeding, no final step
    amp: bool | None = None  # trainer switches (None: on for CUDA)
    channels_last: bool | None = None
    compile: bool = False
    threads: int | None = None  # CPU threads for training (None: torch's)
    eval_every: int | None = None  # None: proxies validate at the end (every epoch for a pruner), finals every epoch
    test_every_epoch: bool = False  # the finals only: a candidate's proxy run never sees the test set
    latency_batch: int = 1  # options of the latency metric
    latency_provider: str = "cpu"
    latency_threads: int | None = None  # None: one per core this process may use
    latency_predictor: bool = False  # discard candidates predicted over a latency limit (prunenas.latency_model)
    space_ref: str | None = None  # how a worker finds the space (a name or a TOML path); default `space`
    data: DataConfig | None = None  # how a worker loads the data; default DataConfig(dataset)

    def __post_init__(self) -> None:
        for name in self.objectives:
            get_metric(name)
        check_band(self.limits, self.min_limits, self.max_macs_ratio, self.max_macs)
        check_teacher(self.teacher, self.reference, self.gpus_per_trial)
        if self.data is not None and self.data.val_size == 0:
            raise PrunenasError(
                "--val-size 0 leaves no validation split, and a search ranks its candidates on it (the test set "
                "stays untouched); pass --val-size N with N > 0, or leave it out (a tenth of the training images)"
            )

    @property
    def limits(self) -> tuple[Limit, ...]:
        """--max limits, plus the --max-macs-ratio / --max-macs aliases."""
        limits = list(self.max_limits)
        if not any(lim.metric == "macs" for lim in limits):
            if self.max_macs_ratio is not None:
                limits.append(Limit("macs", float(self.max_macs_ratio), relative=True))
            elif self.max_macs is not None:
                limits.append(Limit("macs", float(self.max_macs)))
        return tuple(limits)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The metrics optimised, in order: as given, else val_acc and MACs (val_acc alone under limits)."""
        return self.objective_names or (("val_acc",) if self.limits or self.min_limits else DEFAULT_OBJECTIVES)

    def metric_options(self) -> dict[str, Any]:
        """Options of the metrics that take some (the latency metric's runtime and batch)."""
        return {
            "latency_batch": self.latency_batch,
            "latency_provider": self.latency_provider,
            "latency_threads": self.latency_threads,
        }

    def run_settings(self, **changes: Any) -> RunSettings:
        """The settings of the winners' final runs (with `changes`); `proxy_settings` for the candidates."""
        base = RunSettings(
            device=self.device, seed=self.seed, amp=self.amp, channels_last=self.channels_last, compile=self.compile,
            threads=self.threads, eval_every=self.eval_every, test_every_epoch=self.test_every_epoch,
        )  # fmt: skip
        return base.replace(**changes)

    def proxy_settings(self) -> RunSettings:
        """A candidate's proxy run: quiet, no plot, no test set, validated at the end only (it is ranked on
        the final model) unless a pruner needs the per-epoch reports or --eval-every was given."""
        per_epoch = self.single_objective and self.pruner != "none"
        every = self.eval_every or (1 if per_epoch else self.budget.proxy_epochs)
        return self.run_settings(quiet=True, plot=False, test_every_epoch=False, eval_every=every)

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

    def data_config(self) -> DataConfig:
        return self.data or DataConfig(dataset=self.dataset, train_subset=self.budget.train_subset)

    def load_teacher(self, space: Any, num_classes: int) -> Any:
        """The `prunenas.train.Teacher` the candidates distill from (checked: `prunenas.train.load_teacher`),
        None without --teacher."""
        if self.teacher is None:
            return None
        from prunenas.train import load_teacher

        if self.teacher == "reference":
            assert self.reference is not None  # check_teacher
            return load_teacher(space, self.reference, num_classes, flag="--reference", given_as="reference")
        return load_teacher(space, self.teacher, num_classes)

    # -- identity and JSON ----------------------------------------------------------------------------------
    def settings_dict(self) -> dict[str, Any]:
        """What the study is (stored in the study; a resume must match): not how this process runs."""
        d = self.to_dict()
        for k in (
            "worker_only", "workers", "gpus", "gpus_per_trial", "heartbeat", "quiet", "amp", "channels_last", "compile",
            "data", "threads", "eval_every", "test_every_epoch",
        ):  # fmt: skip
            d.pop(k, None)
        d["layout"] = LAYOUT
        d["objectives"] = list(self.objectives)
        d["limits"] = [lim.text() for lim in self.limits] + [f"min {lim.text()}" for lim in self.min_limits]
        return d

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif f.name == "budget":
                v = {**dataclasses.asdict(v), "seed_targets": list(v.seed_targets)}
            elif f.name in ("max_limits", "min_limits"):
                v = [lim.text() for lim in v]
            elif f.name == "data":
                v = v.to_dict() if v is not None else None
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            d[f.name] = v
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise PrunenasError(f"search config: unknown key(s) {unknown}")
        v = dict(d)
        v["out"] = Path(v["out"])
        v["exports_root"] = Path(v.get("exports_root", "exports"))
        b = dict(v["budget"])
        b["seed_targets"] = tuple(b["seed_targets"])
        v["budget"] = Budget(**b)
        v["max_limits"] = tuple(Limit.parse(t) for t in v.get("max_limits", ()))
        v["min_limits"] = tuple(Limit.parse(t, "--min") for t in v.get("min_limits", ()))
        v["objective_names"] = tuple(v.get("objective_names", ()))
        v["gpus"] = tuple(v.get("gpus", ()))
        if v.get("proposer_names") is not None:
            v["proposer_names"] = tuple(v["proposer_names"])
        if v.get("data") is not None:
            v["data"] = DataConfig.from_dict(v["data"])
        return cls(**v)

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


def resolve_search(
    space: Any,
    space_ref: str,
    data: DataConfig,
    settings: SearchSettings,
    run: RunSettings,
    recipe_overrides: Mapping[str, Any],
) -> SearchConfig:
    """The resolved search of the `prunenas search` flags (and of `prunenas.search(...)`)."""
    budget = settings.resolved_budget(data.train_subset)
    if settings.min_density != SearchSettings.min_density and getattr(space, "kind", "density") != "density":
        raise ConfigError(
            f"--min-density {settings.min_density:g} does not apply to --space {space_ref} (a {space.kind} space: its "
            "genes are not densities); leave it out"
        )
    study = safe_name(settings.study or default_study_name(settings, run.seed, recipe_overrides), "--study")
    from prunenas.spaces.traced import is_factory_name

    ref = space_ref
    if (ref.endswith(".toml") or "/" in ref) and not is_factory_name(ref):
        ref = str(Path(ref).resolve())
    return SearchConfig(
        space=space.name,
        dataset=data.dataset,
        study=study,
        out=Path(settings.out) if settings.out else default_study_dir(space.name, data.dataset, study),
        budget=budget,
        budget_name=settings.budget,
        mode=settings.mode,
        sampler=settings.sampler,
        pruner=settings.pruner,
        seed=run.seed,
        objective_names=settings.objectives,
        max_limits=tuple(Limit.parse(t) for t in settings.max),
        max_macs=settings.max_macs,
        max_macs_ratio=settings.max_macs_ratio,
        min_limits=settings.floors(),
        proposer_names=settings.proposers or None,
        reference=settings.reference,
        teacher=settings.teacher,
        final_recipe=settings.final_recipe,
        final=settings.final,
        export=settings.export,
        exports_root=Path(settings.exports),
        storage=settings.storage,
        timeout=settings.timeout,
        device=run.device,
        quiet=run.quiet,
        min_density=settings.min_density,
        latency_batch=settings.latency_batch,
        latency_provider=settings.latency_provider,
        latency_threads=settings.latency_threads,
        latency_predictor=settings.latency_predictor,
        recipe_overrides=dict(recipe_overrides),
        workers=settings.workers,
        gpus=tuple(g.strip() for g in settings.gpus.split(",")) if settings.gpus else (),
        gpus_per_trial=settings.gpus_per_trial,
        heartbeat=settings.heartbeat,
        amp=run.amp,
        channels_last=run.channels_last,
        compile=run.compile,
        threads=run.threads,
        eval_every=run.eval_every,
        test_every_epoch=run.test_every_epoch,
        space_ref=ref,
        data=data.replace(train_subset=budget.train_subset),
    )
