"""A fidelity study, run: the candidates drawn, each evaluator's score of every candidate, the truth (every
candidate trained from scratch on every seed), then the statistics, written to the study folder.

The folder:

    genotypes.json   the candidates (key, level, origin, MACs ratio, genotype), drawn once
    results.jsonl    one line per score and per truth run as it finishes, under the identity of what
                     produced it; a rerun reads them and computes only what is missing
    runs/KEY-RUNID/  the folder of every training (truth runs, scratch proxy runs, fine-tunings): a killed
                     run resumes from its last epoch; identical runs (scratch at the truth's length and
                     seed) are one run
    reference/       the reference trained with --pretrain-epochs
    fidelity.json    everything: settings, machine, candidates, truth per seed, scores, statistics
    fidelity.png     each evaluator's scores against the truth
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunenas import train as training  # the module: a test replaces its train()
from prunenas.checkpoints import CHECKPOINT
from prunenas.config import ConfigError, DataConfig, RunSettings, fingerprint
from prunenas.data import DatasetSplits
from prunenas.devices import resolve_device
from prunenas.errors import PrunenasError
from prunenas.evaluators import EvaluationContext, Evaluator, evaluator_class, get_evaluator
from prunenas.fidelity.candidates import Candidate, checked_proposers, draw_candidates
from prunenas.fidelity.report import BOOTSTRAP_SEED, ceiling, evaluator_stats, macs_alone, write_plot
from prunenas.fidelity.settings import EPOCHS, EvaluatorSpec, FidelitySettings, evaluator_specs, scratch_epochs
from prunenas.genotype import GeneValue, Genotype
from prunenas.hardware import cpu_info
from prunenas.paths import FIDELITY_ROOT, ensure_dir, guarded, write_text
from prunenas.prepare import fit_to_data, load_data
from prunenas.recipes import Recipe, make_recipe
from prunenas.run_files import run_id, run_identity
from prunenas.spaces.base import Space
from prunenas.train_results import TrainResult

RESULTS = "results.jsonl"
GENOTYPES = "genotypes.json"
REPORT = "fidelity.json"
PLOT = "fidelity.png"
RUNS = "runs"

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- what was computed --------------------------------------------------------------------------------------------
class Records:
    """The results file: one JSON object a line, each under the `id` of what produced it (a run identity's
    hash), appended as it is computed. A line cut short by a kill is ignored (and recomputed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: dict[str, dict[str, Any]] = {}
        self._newline_first = False
        if path.is_file():
            text = guarded(lambda: path.read_text(encoding="utf-8"), path, "--out", "read")
            self._newline_first = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    self.found[record["id"]] = record

    def get(self, ident: str) -> dict[str, Any] | None:
        return self.found.get(ident)

    def add(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True)

        def append() -> None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(("\n" if self._newline_first else "") + line + "\n")
                fh.flush()

        guarded(append, self.path, "--out")
        self._newline_first = False
        self.found[record["id"]] = record


# -- the evaluators -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Judge:
    """An evaluator as --evaluators gave it, with the proxy recipe its context carries."""

    spec: EvaluatorSpec
    evaluator: Evaluator
    recipe: Recipe

    @property
    def label(self) -> str:
        return self.spec.label


def judges(specs: Sequence[EvaluatorSpec], space: Space) -> list[Judge]:
    """The evaluators of `specs`, their options checked (one line naming --evaluators): `epochs` of an
    evaluator that trains with the context's recipe sets that recipe's length, the others go to its options."""
    out = []
    for spec in specs:
        cls = evaluator_class(spec.name, "--evaluators")
        epochs = scratch_epochs(spec, cls.options_class, cls.trains)
        options = {k: v for k, v in spec.options.items() if not (epochs is not None and k == EPOCHS)}
        if cls.options_class is None:
            if options:
                extra = " but epochs (the proxy run's length)" if cls.trains else ""
                raise ConfigError(f"--evaluators {spec.name} takes no options{extra}; got {', '.join(options)}")
            evaluator = get_evaluator(spec.name)
        else:
            cls.options_class.check_names(options, f"--evaluators {spec.name}")
            typed = cls.options_class.check_values(options, f"--evaluators {spec.name}:", sep="")
            evaluator = get_evaluator(spec.name, typed)
        recipe = make_recipe("proxy", space.recipe, overrides={"epochs": epochs} if epochs is not None else None)
        out.append(Judge(spec, evaluator, recipe))
    return out


def fixed_genes(judged: Sequence[Judge], space: Space) -> dict[str, GeneValue]:
    """Genes some evaluator cannot judge changed (`Evaluator.fixed_genes`): the candidates keep them."""
    fixed: dict[str, GeneValue] = {}
    for j in judged:
        fixed.update(j.evaluator.fixed_genes(space))
    return fixed


# -- the study ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FidelityOutcome:
    out: Path
    report: dict[str, Any]


def default_out(space: Space, data_cfg: DataConfig, settings: FidelitySettings, seed: int) -> Path:
    """runs/fidelity/SPACE-DATASET-HASH, the hash of what decides the candidates (not of the evaluators, the
    truth's length or its seeds: a study that adds them goes on in the same folder)."""
    name = f"{space.slug}-{data_cfg.dataset}-{draw_identity(space, data_cfg, settings, seed)}"
    return FIDELITY_ROOT / name


def draw_identity(space: Space, data_cfg: DataConfig, settings: FidelitySettings, seed: int) -> str:
    return fingerprint(space.name, data_cfg.identity(), settings.identity(), seed)


def _check_input(space: Space, data_cfg: DataConfig, settings: FidelitySettings, judged: Sequence[Judge]) -> None:
    needs = [j.label for j in judged if j.evaluator.needs_trained]
    if needs and settings.reference is None and settings.pretrain_epochs is None:
        raise PrunenasError(
            f"--evaluators {', '.join(needs)} {'scores' if len(needs) == 1 else 'score'} candidates cut from "
            f"trained weights: pass --reference CKPT (a `prunenas pretrain --space {space.name}` checkpoint) or "
            "--pretrain-epochs N"
        )
    if settings.reference is not None and not Path(settings.reference).is_file():
        raise PrunenasError(
            f"--reference {settings.reference!r} is not a file; pass a checkpoint.pt of `prunenas pretrain --space "
            f"{space.name}` or --pretrain-epochs N"
        )
    if data_cfg.val_size == 0:
        raise PrunenasError("--val-size 0 leaves no validation images, and fidelity ranks by validation accuracy")


def pretrain(space: Space, data: DatasetSplits, settings: RunSettings, epochs: int, out: Path, log: Log) -> Path:
    """The space's reference trained `epochs` epochs with the proxy recipe in `out`/reference (resumed, or
    found there when an earlier run trained it)."""

    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": epochs})
    genotype = space.reference()
    folder = out / "reference" / f"{genotype.key}-{run_id(run_identity(genotype, recipe, settings.seed, data))}"
    if not (folder / "metrics.json").is_file():
        log(f"fidelity: training the reference {epochs} epoch(s) (--pretrain-epochs) in {folder}")
        training.train(
            space, genotype, data, recipe, settings.replace(eval_every=epochs), out_dir=folder, evaluate_test=False
        )
    return folder / CHECKPOINT


def candidates(
    space: Space,
    data: DatasetSplits,
    data_cfg: DataConfig,
    settings: FidelitySettings,
    run: RunSettings,
    reference: Path | None,
    fixed: Mapping[str, GeneValue],
    out: Path,
    log: Log,
) -> tuple[list[Candidate], bool]:
    """The study's candidates: read from genotypes.json when it holds the same draw, else drawn; (them,
    whether they were drawn now)."""
    ident = draw_identity(space, data_cfg, settings, run.seed)
    path = out / GENOTYPES
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("draw") == ident:
                return [Candidate.from_dict(d, space) for d in stored["candidates"]], False
        except (OSError, ValueError, KeyError, TypeError, PrunenasError):
            pass  # unreadable, or another draw: drawn again
    drawn = draw_candidates(
        space, settings.genotypes, settings.levels, run.seed, data=data, reference=reference,
        proposer_names=settings.proposers or None, fixed=fixed, device=run.device, log=log,
    )  # fmt: skip
    return drawn, True


def context(
    judge: Judge,
    space: Space,
    data: DatasetSplits,
    settings: RunSettings,
    seed: int,
    reference: Path | None,
    out: Path,
    train_fn: Callable[..., TrainResult],
) -> EvaluationContext:
    """What `judge` scores candidates with: its proxy recipe, quiet run settings that validate at the end only,
    the base seed, the trained reference (when there is one) and the study folder."""
    return EvaluationContext(
        space=space,
        data=data,
        recipe=judge.recipe,
        settings=settings.replace(eval_every=judge.recipe.epochs),
        seed=seed,
        reference=reference,
        work_dir=out,
        train_fn=train_fn,
    )


def _record(
    ident: str, role: str, genotype: Genotype, seed: int, recipe: Recipe, result: TrainResult
) -> dict[str, Any]:
    return {
        "id": ident, "role": role, "key": genotype.key, "seed": seed, "recipe": recipe.name,
        "epochs": recipe.epochs, "val_acc": result.val_acc, "seconds": result.wall_time_s, "stopped": result.stopped,
    }  # fmt: skip


#: One result to compute: (its identity hash, what it is: "truth" or an evaluator's label, the candidate, the seed,
#: the recipe, the function that computes it into a run folder).
Item = tuple[str, str, Candidate, int, Recipe, Callable[[Path], TrainResult]]


def plan(
    space: Space,
    judged: Sequence[Judge],
    contexts: Mapping[str, EvaluationContext],
    cands: Sequence[Candidate],
    data: DatasetSplits,
    reference: Path | None,
    truth_recipe: Recipe,
    seeds: Sequence[int],
    settings: RunSettings,
    train: Callable[..., TrainResult],
) -> list[Item]:
    """Every score (the evaluators first: they are the cheap ones) and every truth run, each under the hash of
    what makes it differ from another (`run_identity`, with the evaluator's identity and reference for one
    judged otherwise than by a proxy run): a proxy run at the truth's length and seed is the truth's run."""
    items: list[Item] = []
    for j in judged:
        ctx = dataclasses.replace(contexts[j.label], extra_metrics={"fidelity": j.label})
        for c in cands:
            identity = run_identity(c.genotype, j.recipe, ctx.seed, data)
            judged_by = j.evaluator.identity()
            if judged_by:
                identity = {**identity, "evaluator": judged_by, "reference": str(reference) if reference else None}

            def score(
                folder: Path, j: Judge = j, ctx: EvaluationContext = ctx, g: Genotype = c.genotype
            ) -> TrainResult:
                return j.evaluator.evaluate(g, ctx, folder)

            items.append((run_id(identity), j.label, c, ctx.seed, j.recipe, score))
    for seed in seeds:
        run = settings.replace(seed=seed, eval_every=truth_recipe.epochs)
        for c in cands:

            def truth(folder: Path, g: Genotype = c.genotype, run: RunSettings = run) -> TrainResult:
                return training.train(space, g, data, truth_recipe, run, out_dir=folder, evaluate_test=False)

            ident = run_id(run_identity(c.genotype, truth_recipe, seed, data))
            items.append((ident, "truth", c, seed, truth_recipe, truth))
    return items


def run_fidelity(
    space: Space,
    data_cfg: DataConfig,
    run: RunSettings,
    settings: FidelitySettings,
    *,
    log: Log = stderr_log,
) -> FidelityOutcome:
    """Run (or continue) the study `settings` describes on `space` and the data of `data_cfg`; `run`: device,
    base seed and speed switches. Bad input is refused before anything is written."""

    judged = judges(evaluator_specs(settings.evaluators), space)
    _check_input(space, data_cfg, settings, judged)
    trained = settings.reference is not None or settings.pretrain_epochs is not None
    if settings.proposers:
        checked_proposers(space, settings.proposers, trained)
    space, _ = fit_to_data(space, image_size=data_cfg.image_size, dataset=data_cfg.dataset)
    for j in judged:
        why = j.evaluator.serves(space)
        if why:
            raise PrunenasError(f"--evaluators {j.label} cannot judge --space {space.name}: {why}")
    out = Path(settings.out) if settings.out else default_out(space, data_cfg, settings, run.seed)
    data = load_data(data_cfg, run.seed)
    if len(data.val) == 0:
        raise PrunenasError("the data has no validation images, and fidelity ranks by validation accuracy")
    quiet = run.replace(quiet=True, plot=False, test_every_epoch=False)
    reference = Path(settings.reference) if settings.reference else None
    if settings.pretrain_epochs is not None:
        reference = pretrain(space, data, quiet, settings.pretrain_epochs, ensure_dir(out, "--out"), log)
    contexts = {j.label: context(j, space, data, quiet, run.seed, reference, out, training.train) for j in judged}
    for j in judged:
        j.evaluator.prepare(contexts[j.label])  # a bad reference fails here, before the folder is written
    fixed = fixed_genes(judged, space)
    cands, new = candidates(space, data, data_cfg, settings, run, reference, fixed, out, log)
    ensure_dir(out, "--out")
    if new:
        payload = {"draw": draw_identity(space, data_cfg, settings, run.seed), "space": space.name,
                   "candidates": [c.to_dict() for c in cands]}  # fmt: skip
        write_text(out / GENOTYPES, json.dumps(payload, indent=2) + "\n", "--out")
    records = Records(out / RESULTS)
    truth_recipe = make_recipe("proxy", space.recipe, overrides={"epochs": settings.truth_epochs})
    seeds = [run.seed + s for s in range(settings.seeds)]

    items = plan(space, judged, contexts, cands, data, reference, truth_recipe, seeds, quiet, training.train)
    todo = len({ident for ident, *_ in items if records.get(ident) is None})
    log(
        f"fidelity: {len(cands)} genotypes, {len(judged)} evaluator(s), truth {settings.truth_epochs} epoch(s) x "
        f"{len(seeds)} seed(s) on {resolve_device(run.device)}; {todo} result(s) to compute, "
        f"{len({i for i, *_ in items}) - todo} already in {out / RESULTS}"
    )
    done = 0
    for ident, role, c, seed, recipe, compute in items:
        if records.get(ident) is not None:
            continue
        result = compute(out / RUNS / f"{c.genotype.key}-{ident}")
        records.add(_record(ident, role, c.genotype, seed, recipe, result))
        done += 1
        acc = "-" if result.val_acc is None else f"{result.val_acc:.4f}"
        what = f"truth seed {seed}" if role == "truth" else role
        log(f"fidelity [{done}/{todo}] {what} {c.genotype.key} (MACs {c.macs_ratio:.3f}): val_acc {acc}, "
            f"{result.wall_time_s:.1f} s")  # fmt: skip

    report = build_report(space, data, data_cfg, run, settings, judged, cands, items, records, truth_recipe, seeds,
                          reference, out)  # fmt: skip
    write_text(out / REPORT, json.dumps(report, indent=2) + "\n", "--out")
    write_plot(report, out / PLOT)
    return FidelityOutcome(out, report)


def _score(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"score": record.get("val_acc"), "seconds": record.get("seconds"), "stopped": record.get("stopped")}


def _machine(device: str) -> dict[str, Any]:
    import torch

    dev = resolve_device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"cpu": cpu_info().to_dict(), "device": str(dev), "gpu": gpu, "torch": torch.__version__}


def build_report(
    space: Space,
    data: DatasetSplits,
    data_cfg: DataConfig,
    run: RunSettings,
    settings: FidelitySettings,
    judged: Sequence[Judge],
    cands: Sequence[Candidate],
    items: Sequence[tuple[str, str, Candidate, int, Recipe, Any]],
    records: Records,
    truth_recipe: Recipe,
    seeds: Sequence[int],
    reference: Path | None,
    out: Path,
) -> dict[str, Any]:
    """fidelity.json: everything the study computed and the statistics of it."""
    truth: dict[str, dict[int, dict[str, Any]]] = {}
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for ident, role, c, seed, _, _ in items:
        rec = records.get(ident) or {}
        if role == "truth":
            truth.setdefault(c.genotype.key, {})[seed] = rec
        else:
            scores.setdefault(role, {})[c.genotype.key] = rec
    genotypes = []
    for c in cands:
        runs = [truth.get(c.genotype.key, {}).get(s, {}) for s in seeds]
        per_seed = [r.get("val_acc") for r in runs]
        known = [v for v in per_seed if v is not None]
        genotypes.append({
            **c.to_dict(),
            "truth": {
                "per_seed": per_seed, "mean": sum(known) / len(known) if known else None,
                "seconds": [r.get("seconds") for r in runs], "stopped": [r.get("stopped") for r in runs],
            },
            "scores": {label: _score(by_key.get(c.genotype.key, {})) for label, by_key in scores.items()},
        })  # fmt: skip
    truth_rows = [g["truth"]["per_seed"] for g in genotypes]
    levels = [c.level for c in cands]
    evaluators = []
    for j in judged:
        stats = evaluator_stats(
            truth_rows, [g["scores"][j.label]["score"] for g in genotypes],
            [g["scores"][j.label]["seconds"] for g in genotypes], settings.bootstrap, levels,
        )  # fmt: skip
        evaluators.append({
            "label": j.label, "name": j.evaluator.name, "options": j.evaluator.describe()["options"],
            "recipe_epochs": j.recipe.epochs, "needs_trained": j.evaluator.needs_trained, **stats,
        })  # fmt: skip
    truth_seconds = [t for g in genotypes for t in g["truth"]["seconds"] if t is not None]
    return {
        "space": space.name,
        "dataset": data.describe(),
        "settings": {**settings.to_dict(), "seed": run.seed, "data": data_cfg.to_dict(), "run": run.to_dict()},
        "reference": str(reference) if reference else None,
        "machine": _machine(run.device),
        "truth": {
            "recipe": truth_recipe.to_dict(),
            "epochs": truth_recipe.epochs,
            "seeds": list(seeds),
            "seconds_per_run": sum(truth_seconds) / len(truth_seconds) if truth_seconds else None,
        },
        "bootstrap": {"resamples": settings.bootstrap, "seed": BOOTSTRAP_SEED, "level": 0.9, "over": "genotypes"},
        "ceiling": ceiling(truth_rows, settings.bootstrap, levels),
        "evaluators": evaluators,
        "macs_alone": macs_alone(truth_rows, [c.macs_ratio for c in cands], levels, settings.bootstrap),
        "genotypes": genotypes,
        "files": {"folder": str(out), "written": [REPORT, PLOT, GENOTYPES, RESULTS]},
    }
