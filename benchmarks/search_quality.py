"""Does the search beat its proposers? Three arms at the same training compute on resnet20_channels.

    python benchmarks/search_quality.py --tiny                       # the whole path on digits, 1-3 minutes
    python benchmarks/search_quality.py --data-dir ../shared/datasets/cifar10-jpeg.tar.gz \\
        --out-md benchmarks/results/DATE-cpu-search-quality.md --out-json ... --plot ...

Protocol (every size is a flag; the results file records the ones used and why):

- Data: a fixed, seeded training subset (`--train-subset` S images) and the standard validation split
  (`val_size` default: 5,000 of CIFAR-10's 50,000 training images), both from `prunenas.api.load_data`.
  Candidates are ranked on validation accuracy only; the test set is evaluated once, on the final
  retrained models.
- Reference: a short proxy pretrain of the space's reference model (`--pretrain-epochs`), as
  `prunenas propose --pretrain-epochs N` does it; l1 and fpgm score its weights.
- Proposals: uniform, l1, fpgm and random (`--proposers`), each at the MACs ratios `--levels`
  (`Target("macs_ratio", r)`, met within 2%): P = 4 x 3 = 12 genotypes.
- Three arms, each charged N = `--candidates` proxy trainings (`--proxy-epochs` E_p epochs of the
  `proxy` recipe, seed 0), so each spends N x E_p x S image-epochs on candidates:
  a. proposers only: the P proposals, plus N - P more draws of the random proposer (seeds 1, 2, ...,
     spread over the levels), the only proposer with more than one answer per target;
  b. prunenas search: `prunenas.search.run_search` with TPE, one study per level L limited to that level's
     window (`--min macs=L(1-w)x --max macs=L(1+w)x`, single objective val_acc; `--no-band`: `--max` only),
     seeded with that level's proposals, N / levels trained candidates each (N in all): draws outside the
     band are recorded infeasible without training, and the study is extended until it has trained its
     share (at most `--trial-cap` x that many draws). A first design ran one Pareto search over the whole
     range, a second limited each level from above only: in both, the searches' own candidates landed
     below the windows, so only their seeds could ever be picked;
  c. random search over genes: the same per-level studies with the random sampler and THE SAME SEEDS.
     Seeded, because genotypes drawn uniformly per gene have MACs ratios of about 0.15-0.45 on this
     space: almost none would land within 5% of 0.5 or 0.7, and the arm would have nothing to retrain
     there. So b and c differ only in the sampler (TPE vs random), and a vs b measures the search beyond
     its seeds. The P seeded trials of b and c and arm a's P proposals are the same runs (same genotype,
     recipe, seed and data); they are trained once (c's study gets b's run folders copied into its run
     cache) and charged to every arm.
- Final evaluation: for each arm and level, the candidate with the best proxy validation accuracy whose
  MACs are within `--window` (5%) of the level's target is retrained with the longer recipe
  (`scratch-e`, `--final-epochs` E_L epochs) on `--seeds` seeds (0, 1, 2) and tested once; mean +- std
  (sample std) of test accuracy. An arm with no candidate in a window has no entry there.
- Proxy fidelity: F = `--fidelity-genotypes` genotypes (the final picks, then the other candidates
  picked evenly over their MACs range) trained with each proxy length in `--fidelity-epochs` (the
  E_p runs are the candidates' own) and with the longer recipe (seed 0, shared with the finals);
  Kendall's tau-b between each proxy's validation accuracy and the longer recipe's, and MACs alone
  as a baseline ranking.

Every training run lives in its own folder under `--out` (runs/bench/search_quality/...): a finished
run is found and skipped, an interrupted one resumes from its last epoch, and the searches resume
their Optuna journals. One progress line per run (what, i/N, elapsed, ETA from the measured rate).
Ends with a Markdown table, a JSON of every run, the compute per arm and a plot of accuracy vs MACs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SPACE = "resnet20_channels"
ARMS = ("proposers", "search-tpe", "search-random")
ARM_TITLE = {
    "proposers": "a. proposers only",
    "search-tpe": "b. search (TPE, seeded)",
    "search-random": "c. random search (seeded)",
}
COLORS = {"proposers": "tab:orange", "search-tpe": "tab:blue", "search-random": "tab:green"}

TINY = {
    "dataset": "digits",
    "data_dir": None,
    "train_subset": 128,
    "proxy_epochs": 1,
    "candidates": 15,
    "pretrain_epochs": 1,
    "final_epochs": 2,
    "seeds": 2,
    "fidelity_epochs": "1,2",
    "fidelity_genotypes": 13,
}


# -- small statistics ---------------------------------------------------------------------------------------
def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else math.nan


def tau_standard_error(n: int) -> float:
    """Standard deviation of Kendall's tau under independence (a yardstick for the noise of n points)."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n > 1 else math.nan


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p value (nan where undefined)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return math.nan, math.nan
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    try:
        from scipy import stats

        return t, float(2 * stats.t.sf(abs(t), df))
    except ImportError:
        return t, math.nan


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, accuracy) points not dominated by a cheaper-or-equal, at-least-as-accurate one; by cost."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def hypervolume(front: list[tuple[float, float]], max_cost: float = 1.0) -> float:
    """Area dominated by a (MACs ratio, accuracy) front up to MACs ratio `max_cost` and accuracy 0."""
    area = 0.0
    for i, (cost, acc) in enumerate(front):
        if cost >= max_cost:
            break
        nxt = front[i + 1][0] if i + 1 < len(front) else max_cost
        area += (min(nxt, max_cost) - cost) * acc
    return area


def fmt_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


# -- progress -------------------------------------------------------------------------------------------
class Progress:
    """One line per finished run: i/N, elapsed, ETA = image-epochs left / measured image-epochs per second."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.i = 0
        self.n = 0
        self.planned = 0.0  # image-epochs of the whole plan
        self.done = 0.0
        self.fresh = 0.0  # image-epochs trained by this process (cached runs excluded)
        self.lock = threading.Lock()

    def plan(self, runs: int, image_epochs: float) -> None:
        self.n, self.planned = runs, image_epochs

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return self.fresh / elapsed if self.fresh and elapsed > 0 else math.nan

    def line(self, what: str, image_epochs: float, cached: bool, detail: str) -> None:
        with self.lock:
            self.i += 1
            self.done += image_epochs
            if not cached:
                self.fresh += image_epochs
            elapsed = time.perf_counter() - self.t0
            rate = self.rate()
            left = max(0.0, self.planned - self.done)
            eta = fmt_s(left / rate) if rate == rate and rate > 0 else "?"
            tag = " (cached)" if cached else ""
            print(
                f"[{self.i}/{max(self.n, self.i)}] {what}{tag}: {detail} | elapsed {fmt_s(elapsed)}, ETA {eta}",
                flush=True,
            )


# -- the benchmark ------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        import prunenas as pn
        from prunenas.config import DataConfig

        self.args = args
        self.pn = pn
        torch.set_num_threads(args.threads)
        self.root = Path(args.out)
        self.root.mkdir(parents=True, exist_ok=True)
        self.space = pn.get_space(SPACE)
        self.levels = [float(v) for v in args.levels.split(",")]
        self.proposers = [p for p in args.proposers.split(",") if p]
        self.fid_epochs = sorted({int(v) for v in args.fidelity_epochs.split(",")})
        self.seeds = list(range(args.seeds))
        self.data_cfg = DataConfig(
            dataset=args.dataset, data_dir=args.data_dir, train_subset=args.train_subset, val_size=args.val_size
        )
        t0 = time.perf_counter()
        self.splits = pn.load_data(self.data_cfg, seed=0)
        self.load_s = time.perf_counter() - t0
        self.S = len(self.splits.train)
        self.progress = Progress()
        self.runs: list[dict[str, Any]] = []  # every training run, one record each
        self.candidates: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        self.cost_cache: dict[str, Any] = {}
        self.reference_macs = self.cost(self.space.reference()).macs

    # -- helpers ------------------------------------------------------------------------------------------
    def cost(self, genotype: Any) -> Any:
        if genotype.key not in self.cost_cache:
            self.cost_cache[genotype.key] = self.pn.count_cost(genotype, num_classes=self.splits.num_classes)
        return self.cost_cache[genotype.key]

    def settings(self, seed: int, epochs: int) -> Any:
        from prunenas.config import RunSettings

        return RunSettings(
            seed=seed, device=self.args.device, quiet=True, plot=False, channels_last=self.args.channels_last,
            eval_every=max(1, epochs), threads=self.args.threads,
        )  # fmt: skip

    def train_run(
        self, genotype: Any, recipe_name: str, epochs: int, seed: int, *, test: bool, role: str, what: str,
        folder: Path | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Train (or find finished) one run in its own folder; returns its record."""
        from prunenas.train import METRICS, run_id, run_identity, train

        recipe = self.pn.api.make_recipe_for(genotype, recipe_name, epochs=epochs)
        identity = run_identity(genotype, recipe, seed, self.splits)
        if folder is None:
            folder = self.root / "runs" / f"{genotype.key}-{recipe.name}-e{epochs}-s{seed}-{run_id(identity)}"
        metrics_file = folder / METRICS
        stored: dict[str, Any] = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        cached = bool(stored.get("finished") and (not test or stored.get("test_acc") is not None))
        if cached:
            result = stored
        else:
            was_done = bool(stored.get("finished"))
            r = train(
                self.space, genotype, self.splits, recipe, self.settings(seed, epochs), out_dir=folder,
                evaluate_test=test,
            )  # fmt: skip
            result = r.to_dict()
            cached = was_done  # only the test pass was added to a finished run
        c = self.cost(genotype)
        record = {
            "role": role,
            "key": genotype.key,
            "genes": dict(genotype.genes),
            "macs": c.macs,
            "macs_ratio": c.macs_ratio,
            "params": c.params,
            "seed": seed,
            "recipe": recipe.name,
            "epochs": epochs,
            "epochs_run": result["epochs_run"],
            "image_epochs": result["epochs_run"] * self.S,
            "val_acc": result["val_acc"],
            "test_acc": result.get("test_acc") if test else None,
            "wall_s": result["wall_time_s"],
            "images_per_s": result["images_per_s"],
            "cached": cached,
            "folder": str(folder),
        }
        self.progress.line(
            what, record["image_epochs"], cached,
            f"{genotype.key} MACs {c.macs_ratio:.3f}, {recipe.name} {epochs} ep, val {pct(record['val_acc'])}"
            + (f", test {pct(record['test_acc'])}" if test else "")
            + f", {record['wall_s']:.0f} s at {record['images_per_s']:.0f} img/s",
        )  # fmt: skip
        self.runs.append(record)
        return record

    # -- steps --------------------------------------------------------------------------------------------
    def pretrain(self) -> Path:
        g = self.space.reference()
        rec = self.train_run(
            g, "proxy", self.args.pretrain_epochs, 0, test=False, role="pretrain",
            what="pretrain reference (for l1, fpgm)",
        )  # fmt: skip
        self.pretrain_record = rec
        return Path(rec["folder"]) / "checkpoint.pt"

    def propose(self, reference: Path) -> None:
        """The P proposals (the seeds of both searches), and arm a's extra random-proposer draws."""
        t0 = time.perf_counter()
        self.proposals: list[dict[str, Any]] = []
        for name in self.proposers:
            for level in self.levels:
                try:
                    g = self.pn.propose(
                        self.space, name, macs_ratio=level, reference=reference, data=self.splits, seed=0,
                        device=self.args.device,
                    )  # fmt: skip
                except Exception as exc:  # a proposer that cannot meet a target is reported, not fatal
                    print(f"proposal {name} at {level}: failed ({exc})", flush=True)
                    continue
                self.proposals.append({"proposer": name, "target": level, "seed": 0, "genotype": g})
        extra = self.args.candidates - len(self.proposals)
        self.extras: list[dict[str, Any]] = []
        keys = {p["genotype"].key for p in self.proposals}
        seed = 1
        while len(self.extras) < extra and seed < 100 + extra:
            for level in self.levels:
                if len(self.extras) >= extra:
                    break
                g = self.pn.propose(self.space, "random", macs_ratio=level, data=self.splits, seed=seed)
                if g.key not in keys:
                    keys.add(g.key)
                    self.extras.append({"proposer": "random", "target": level, "seed": seed, "genotype": g})
            seed += 1
        self.propose_s = time.perf_counter() - t0
        print(
            f"proposals: {len(self.proposals)} seeds ({', '.join(self.proposers)} at {self.args.levels}) and "
            f"{len(self.extras)} extra random-proposer draws for arm a, in {self.propose_s:.0f} s",
            flush=True,
        )

    def search(self, arm: str, sampler: str, reference: Path) -> None:
        """Arms b and c: one prunenas search per MACs level, limited to that level's window (see the module
        docstring), single objective val_acc, seeded with that level's proposals, N/levels trained each. (A Pareto
        search over the whole range puts its extra trials anywhere in MACs, mostly outside the windows of
        the levels, so only its seeds could be picked: the first CPU run showed exactly that.)"""
        per_level = self.args.candidates // len(self.levels)
        for level in self.levels:
            self._search_level(arm, sampler, reference, level, per_level)

    def _search_level(self, arm: str, sampler: str, reference: Path, level: float, trials: int) -> None:
        from prunenas.config import RunSettings
        from prunenas.search import SearchSettings, run_search
        from prunenas.search.config import resolve_search
        from prunenas.train import METRICS

        band = "-band" if self.args.band else ""
        out = self.root / f"search-{sampler}-e{self.args.proxy_epochs}-L{level:g}{band}"
        limit = f"macs={level * (1 + self.args.window):.4f}x"
        floor = (f"macs={level * (1 - self.args.window):.4f}x",) if self.args.band else ()
        settings = SearchSettings(
            budget="fast", trials=trials, proxy_epochs=self.args.proxy_epochs, sampler=sampler,
            proposers=tuple(self.proposers), reference=str(reference), final=False, export=False,
            study=f"bench-{sampler}-L{level:g}{band}", out=str(out), max=(limit,), min=floor,
        )  # fmt: skip
        run = RunSettings(seed=0, device=self.args.device, quiet=True, channels_last=self.args.channels_last)
        config = resolve_search(self.space, SPACE, self.data_cfg, settings, run, {})
        # the study's seeds: the proposers at exactly this level (the budget presets fix the targets)
        config = replace(config, budget=replace(config.budget, seed_targets=(level,)))
        tpe = getattr(self, "tpe_studies", {})
        if arm == "search-random" and level in tpe:
            self._share_seed_runs(out, *tpe[level])
        runs_dir = out / "runs"
        before = {p: p.stat().st_mtime for p in runs_dir.glob(f"*/{METRICS}")} if runs_dir.exists() else {}
        seen = dict(before)
        reported: set[str] = set()
        stop = threading.Event()

        def report_new() -> None:
            for p in sorted(runs_dir.glob(f"*/{METRICS}")) if runs_dir.exists() else []:
                try:
                    mtime = p.stat().st_mtime
                    if seen.get(p) == mtime:
                        continue
                    m = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue  # being written: next poll
                seen[p] = mtime
                reported.add(p.parent.name)
                cached = p in before
                self.progress.line(
                    f"{ARM_TITLE[arm]} candidate", m["epochs_run"] * self.S, cached,
                    f"{m['genotype_key']} MACs {self.macs_text(m['genotype'])}, proxy {m['epochs_run']} ep, "
                    f"val {pct(m['val_acc'])}, "
                    f"{m['wall_time_s']:.0f} s at {m['images_per_s']:.0f} img/s",
                )  # fmt: skip

        def watch() -> None:
            while not stop.wait(2.0):
                report_new()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        # With a band, candidates outside it are recorded infeasible and never trained (MACs are counted, not
        # trained), so the study is extended (--trials is study-wide: a rerun resumes it) until it has trained
        # `trials` candidates, the compute every arm is charged, or has drawn `--trial-cap` x that many.
        cap = trials * self.args.trial_cap
        total = trials

        def log(msg: str) -> None:
            if not msg.startswith("resuming study"):  # one per extension: noise here
                print(f"  {arm}: {msg}", flush=True)

        try:
            while True:
                outcome = run_search(config, self.space, self.splits, log=log)
                trained = len(self._trial_candidates(outcome.study, arm))
                if trained >= trials or total >= cap:
                    break
                total = min(cap, total + trials - trained)
                config = replace(config, budget=replace(config.budget, trials=total))
        finally:
            stop.set()
            watcher.join()
            report_new()
        drawn = sum(1 for t in outcome.study.get_trials(deepcopy=False) if t.user_attrs.get("key"))
        self.drawn = {**getattr(self, "drawn", {}), f"{arm}@{level:g}": {"drawn": drawn, "trained": trained}}
        if trained < trials:
            print(
                f"  {arm}: at {level:g}x only {trained} of {trials} candidates fell in the band after {drawn} draws "
                f"(--trial-cap {self.args.trial_cap}); this arm trains fewer candidates there",
                flush=True,
            )
        if arm == "search-tpe":
            self.tpe_studies = {**getattr(self, "tpe_studies", {}), level: (outcome.study, runs_dir)}
        self.search_s = getattr(self, "search_s", {})
        self.search_s[arm] = self.search_s.get(arm, 0.0) + time.perf_counter() - t0
        for cand in self._trial_candidates(outcome.study, arm):
            self.candidates[arm].append(cand)
            if cand["run"] not in reported:  # finished before this process (a resumed study)
                self.progress.line(
                    f"{ARM_TITLE[arm]} candidate", cand["image_epochs"], True,
                    f"{cand['key']} MACs {cand['macs_ratio']:.3f}, proxy {cand['epochs']} ep, "
                    f"val {pct(cand['val_acc'])}",
                )  # fmt: skip
        self.search_dirs = getattr(self, "search_dirs", {})
        self.search_dirs[f"{arm}@{level:g}"] = str(out)

    def macs_text(self, genotype: dict[str, Any]) -> str:
        """The MACs ratio by prunenas's forward-hook count (no tracing: safe beside the training thread)."""
        import torch

        from prunenas.cost import fast_macs

        try:
            with torch.no_grad():
                macs = fast_macs(self.space, self._genotype_from(genotype))
        except Exception:
            macs = None
        return f"{macs / self.reference_macs:.3f}" if macs else "?"

    def _genotype_from(self, d: dict[str, Any]) -> Any:
        from prunenas.genotype import Genotype

        return Genotype.from_dict(d)

    def _share_seed_runs(self, out: Path, study: Any, tpe_runs: Path) -> None:
        """Copy b's finished seed runs into c's run cache: the same runs (genotype, recipe, seed, data)."""
        import optuna

        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            a = t.user_attrs
            if a.get("origin") != "proposer" or not a.get("run"):
                continue
            src, dst = tpe_runs / a["run"], out / "runs" / a["run"]
            if src.exists() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))

    def _trial_candidates(self, study: Any, arm: str) -> list[dict[str, Any]]:
        import optuna

        out: list[dict[str, Any]] = []
        keys: set[str] = set()
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            if t.state != optuna.trial.TrialState.COMPLETE or a.get("infeasible") or a.get("val_acc") is None:
                continue
            if a["key"] in keys:
                continue
            keys.add(a["key"])
            epochs = a.get("epochs_run") or self.args.proxy_epochs
            seeded = a.get("origin") == "proposer"
            out.append(
                {
                    "arm": arm,
                    "key": a["key"],
                    "genotype": a["genotype"],
                    "genes": a["genotype"]["genes"],
                    "macs": a["macs"],
                    "macs_ratio": a["macs_ratio"],
                    "params": a.get("params"),
                    "val_acc": a["val_acc"],
                    "origin": "proposal" if seeded else f"{self.sampler_of(arm)} sampler",
                    "proposer": a.get("proposer"),
                    "target": (a.get("target") or {}).get("value"),
                    "trial": t.number,
                    "seed": 0,
                    "epochs": epochs,
                    "image_epochs": epochs * self.S,
                    # c's seeds are b's runs: trained once, charged to both arms
                    "trained_here": not (arm == "search-random" and seeded),
                    "wall_s": a.get("train_time_s"),
                    "run": a.get("run"),
                }
            )
        return out

    @staticmethod
    def sampler_of(arm: str) -> str:
        return {"search-tpe": "TPE", "search-random": "random"}.get(arm, "-")

    def arm_a(self) -> None:
        """Arm a: the proposals' proxy results (the seed trials of b: same runs) plus its extra draws."""
        by_key = {c["key"]: c for c in self.candidates["search-tpe"]}
        for p in self.proposals:
            c = by_key.get(p["genotype"].key)
            if c is None:
                continue
            self.candidates["proposers"].append({**c, "arm": "proposers", "trained_here": False})
        for e in self.extras:
            g = e["genotype"]
            rec = self.train_run(
                g, "proxy", self.args.proxy_epochs, 0, test=False, role="candidate",
                what=f"{ARM_TITLE['proposers']} extra (random proposer seed {e['seed']} at {e['target']:g})",
            )  # fmt: skip
            self.candidates["proposers"].append(
                {
                    "arm": "proposers", "key": g.key, "genotype": g.to_dict(), "genes": dict(g.genes),
                    "macs": rec["macs"], "macs_ratio": rec["macs_ratio"], "params": rec["params"],
                    "val_acc": rec["val_acc"], "origin": "proposal", "proposer": "random", "target": e["target"],
                    "trial": None, "seed": 0, "epochs": rec["epochs_run"], "image_epochs": rec["image_epochs"],
                    "trained_here": True, "wall_s": rec["wall_s"], "run": rec["folder"], "proposer_seed": e["seed"],
                }
            )  # fmt: skip

    def pick(self) -> None:
        """Per arm and level: the best proxy validation accuracy within the window around the target MACs."""
        self.picks: dict[str, dict[float, dict[str, Any] | None]] = {}
        for arm in ARMS:
            self.picks[arm] = {}
            for level in self.levels:
                inside = [c for c in self.candidates[arm] if abs(c["macs_ratio"] / level - 1) <= self.args.window]
                inside.sort(key=lambda c: (-c["val_acc"], c["macs"]))
                self.picks[arm][level] = inside[0] if inside else None

    def fidelity_set(self) -> list[dict[str, Any]]:
        chosen: dict[str, dict[str, Any]] = {}
        for arm in ARMS:
            for level in self.levels:
                c = self.picks[arm][level]
                if c is not None:
                    chosen.setdefault(c["key"], c)
        pool: dict[str, dict[str, Any]] = {}
        for p in self.candidates["proposers"][: len(self.proposals)]:
            pool.setdefault(p["key"], p)
        for arm in ARMS:
            for c in self.candidates[arm]:
                pool.setdefault(c["key"], c)
        # the proposals first (they are at the levels), then the rest evenly over the MACs range
        for key, c in list(pool.items())[: len(self.proposals)]:
            if len(chosen) < self.args.fidelity_genotypes:
                chosen.setdefault(key, c)
        rest = sorted((c for k, c in pool.items() if k not in chosen), key=lambda c: c["macs"])
        want = self.args.fidelity_genotypes - len(chosen)
        if want > 0 and rest:
            idx = sorted({round(i * (len(rest) - 1) / max(1, want - 1)) for i in range(want)}) if want > 1 else [0]
            for i in idx:
                chosen.setdefault(rest[i]["key"], rest[i])
        return list(chosen.values())

    def fidelity(self, genotypes: list[dict[str, Any]]) -> None:
        self.fid_rows: list[dict[str, Any]] = []
        n = len(genotypes)
        for i, c in enumerate(genotypes, 1):
            g = self._genotype_from(c["genotype"])
            row = {"key": c["key"], "macs_ratio": c["macs_ratio"], "origin": c["origin"], "proposer": c["proposer"],
                   "val": {}}  # fmt: skip
            for e in self.fid_epochs:
                if e == self.args.proxy_epochs:
                    row["val"][e] = c["val_acc"]  # the candidate's own proxy run
                    continue
                rec = self.train_run(
                    g, "proxy", e, 0, test=False, role="fidelity", what=f"fidelity {i}/{n}: proxy {e} ep"
                )
                row["val"][e] = rec["val_acc"]
            rec = self.train_run(
                g, "scratch-e", self.args.final_epochs, 0, test=False, role="fidelity",
                what=f"fidelity {i}/{n}: longer recipe {self.args.final_epochs} ep",
            )  # fmt: skip
            row["val_long"] = rec["val_acc"]
            self.fid_rows.append(row)

    def finals(self) -> None:
        self.final_runs: dict[str, list[dict[str, Any]]] = {}
        keys = []
        for arm in ARMS:
            for level in self.levels:
                c = self.picks[arm][level]
                if c is not None and c["key"] not in keys:
                    keys.append(c["key"])
        genotypes = {c["key"]: c for arm in ARMS for c in (self.picks[arm][lv] for lv in self.levels) if c is not None}
        for j, key in enumerate(keys, 1):
            g = self._genotype_from(genotypes[key]["genotype"])
            self.final_runs[key] = [
                self.train_run(
                    g,
                    "scratch-e",
                    self.args.final_epochs,
                    seed,
                    test=True,
                    role="final",
                    what=f"final {j}/{len(keys)} seed {seed}",
                )
                for seed in self.seeds
            ]

    # -- the plan -----------------------------------------------------------------------------------------
    def plan(self, picks: int | None = None) -> tuple[int, float, dict[str, float]]:
        """(runs, image-epochs, per stage) of the whole benchmark; finals at most `picks` genotypes."""
        a, S = self.args, self.S
        P = len(self.proposers) * len(self.levels)
        T = max(0, a.candidates - P)
        n_picks = picks if picks is not None else len(ARMS) * len(self.levels)
        F = max(a.fidelity_genotypes, n_picks)
        short = [e for e in self.fid_epochs if e != a.proxy_epochs]
        stages = {
            "pretrain": a.pretrain_epochs * S,
            "search-tpe": a.candidates * a.proxy_epochs * S,
            "search-random": T * a.proxy_epochs * S,
            "proposers extras": T * a.proxy_epochs * S,
            "fidelity": F * (sum(short) + a.final_epochs) * S,
            "finals": n_picks * (len(self.seeds) - 1) * a.final_epochs * S,
        }
        runs = 1 + a.candidates + a.candidates + T + F * (len(short) + 1) + n_picks * len(self.seeds)
        return runs, float(sum(stages.values())), stages

    # -- everything ---------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        runs, ie, stages = self.plan()
        self.progress.plan(runs, ie)
        print(
            f"data: {self.args.dataset}, {self.S} train / {len(self.splits.val)} val / {len(self.splits.test)} test "
            f"images (loaded in {self.load_s:.0f} s); plan: {runs} runs, {ie / 1e6:.2f}M image-epochs "
            f"({', '.join(f'{k} {v / 1e3:.0f}k' for k, v in stages.items())})",
            flush=True,
        )
        reference = self.pretrain()
        rate = self.pretrain_record["images_per_s"]
        if rate:
            print(
                f"measured: {rate:.0f} img/s training the full-width reference; at that rate the plan's training "
                f"alone is ~{fmt_s(ie / rate)} (pruned candidates train faster, validation passes add to it)",
                flush=True,
            )
        self.propose(reference)
        self.search("search-tpe", "tpe", reference)
        self.search("search-random", "random", reference)
        self.arm_a()
        self.pick()
        n_picks = len({c["key"] for arm in ARMS for c in self.picks[arm].values() if c is not None})
        runs, ie, _ = self.plan(n_picks)
        self.progress.plan(runs, ie)
        self.fidelity(self.fidelity_set())
        self.finals()
        self.wall_s = time.perf_counter() - t0
        return self.results(started)

    # -- results ------------------------------------------------------------------------------------------
    def results(self, started: str) -> dict[str, Any]:
        import torch

        a = self.args
        arms: dict[str, Any] = {}
        for arm in ARMS:
            cands = self.candidates[arm]
            front = pareto_front([(c["macs_ratio"], c["val_acc"]) for c in cands])
            levels: dict[str, dict[str, Any] | None] = {}
            for level in self.levels:
                c = self.picks[arm][level]
                if c is None:
                    levels[str(level)] = None
                    continue
                runs = self.final_runs[c["key"]]
                tests = [r["test_acc"] for r in runs]
                vals = [r["val_acc"] for r in runs]
                m, s = mean_std(tests)
                levels[str(level)] = {
                    "key": c["key"], "genes": c["genes"], "macs": c["macs"], "macs_ratio": c["macs_ratio"],
                    "origin": c["origin"], "proposer": c["proposer"], "proxy_val_acc": c["val_acc"],
                    "test_accs": tests, "test_mean": m, "test_std": s, "val_mean": mean_std(vals)[0],
                }  # fmt: skip
            proxy_ie = sum(c["image_epochs"] for c in cands)
            final_ie = sum(
                r["image_epochs"] for lv in levels.values() if lv is not None for r in self.final_runs[lv["key"]]
            )
            arms[arm] = {
                "candidates": len(cands),
                "seeded": sum(1 for c in cands if c["origin"] == "proposal" and c.get("trial") is not None),
                "candidates_in_windows": {
                    str(lv): sum(1 for c in cands if abs(c["macs_ratio"] / lv - 1) <= a.window) for lv in self.levels
                },
                "proxy_front": front,
                "proxy_hypervolume": hypervolume(front),
                "levels": levels,
                "compute": {
                    "proxy_image_epochs": proxy_ie,
                    "pretrain_image_epochs": self.pretrain_record["image_epochs"],
                    "final_image_epochs": final_ie,
                    "total_image_epochs": proxy_ie + self.pretrain_record["image_epochs"] + final_ie,
                    "proxy_trained_here_image_epochs": sum(c["image_epochs"] for c in cands if c["trained_here"]),
                    "search_wall_s": getattr(self, "search_s", {}).get(arm),
                },
                "candidate_list": cands,
            }
        comparisons = []
        for level in self.levels:
            for x, y in (("search-tpe", "proposers"), ("search-random", "proposers"), ("search-tpe", "search-random")):
                lx, ly = arms[x]["levels"][str(level)], arms[y]["levels"][str(level)]
                if lx is None or ly is None:
                    comparisons.append({"level": level, "arms": [x, y], "missing": True})
                    continue
                t, p = welch(lx["test_accs"], ly["test_accs"])
                diff = lx["test_mean"] - ly["test_mean"]
                comparisons.append(
                    {
                        "level": level, "arms": [x, y], "same_genotype": lx["key"] == ly["key"], "diff": diff,
                        "std_x": lx["test_std"], "std_y": ly["test_std"],
                        "beyond_both_stds": abs(diff) > max(lx["test_std"], ly["test_std"]),
                        "beyond_sum_of_stds": abs(diff) > lx["test_std"] + ly["test_std"],
                        "welch_t": t, "welch_p": p,
                    }
                )  # fmt: skip
        fid = self.fidelity_summary()
        run_ie = sum(r["image_epochs"] for r in self.runs if not r["cached"])
        search_ie = sum(c["image_epochs"] for arm in ARMS for c in self.candidates[arm] if c["trained_here"]
                        and arm != "proposers")  # fmt: skip
        return {
            "date": started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "cuda": torch.cuda.is_available(),
                "torch_threads": a.threads,
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "command": a.command,
            "space": SPACE,
            "dataset": self.splits.describe(),
            "sizes": {
                "train_subset": self.S,
                "val": len(self.splits.val),
                "test": len(self.splits.test),
                "levels": self.levels,
                "window": a.window,
                "band": a.band,
                "trial_cap": a.trial_cap,
                "proposers": self.proposers,
                "proposals": len(self.proposals),
                "candidates_per_arm": a.candidates,
                "proxy_epochs": a.proxy_epochs,
                "pretrain_epochs": a.pretrain_epochs,
                "final_recipe": "scratch-e",
                "final_epochs": a.final_epochs,
                "seeds": self.seeds,
                "fidelity_epochs": self.fid_epochs,
                "fidelity_genotypes": len(self.fid_rows),
                "threads": a.threads,
                "channels_last": a.channels_last,
                "why": a.why,
            },
            "plan": dict(zip(("runs", "image_epochs", "stages"), self.plan(), strict=True)),
            "measured_images_per_s": {
                "pretrain_reference": self.pretrain_record["images_per_s"],
                "overall_trained_image_epochs_per_wall_s": (run_ie + search_ie) / self.wall_s if self.wall_s else None,
            },
            "wall_s": self.wall_s,
            "search_dirs": getattr(self, "search_dirs", {}),
            "search_draws": getattr(self, "drawn", {}),
            "proposals": [
                {
                    "proposer": p["proposer"],
                    "target": p["target"],
                    "key": p["genotype"].key,
                    "genes": dict(p["genotype"].genes),
                    "macs_ratio": self.cost(p["genotype"]).macs_ratio,
                }
                for p in self.proposals
            ],
            "arms": arms,
            "comparisons": comparisons,
            "fidelity": fid,
            "runs": self.runs,
        }

    def fidelity_summary(self) -> dict[str, Any]:
        rows = [r for r in self.fid_rows if r["val_long"] is not None]
        longs = [r["val_long"] for r in rows]
        n = len(rows)
        table = []
        for e in self.fid_epochs:
            xs = [r["val"][e] for r in rows]
            table.append(
                {"epochs": e, "image_epochs_per_genotype": e * self.S, "tau": kendall_tau_b(xs, longs), "n": n}
            )
        macs_tau = kendall_tau_b([r["macs_ratio"] for r in rows], longs)
        best = max((t["tau"] for t in table if t["tau"] == t["tau"]), default=math.nan)
        good = [
            t["epochs"] for t in table
            if t["tau"] == t["tau"] and t["tau"] >= best - self.args.tau_margin and t["tau"] > macs_tau
        ]  # fmt: skip
        return {
            "genotypes": n,
            "long_epochs": self.args.final_epochs,
            "table": table,
            "macs_tau": macs_tau,
            "tau_se_independent": tau_standard_error(n),
            "cheapest_good_epochs": min(good) if good else None,
            "rule": f"cheapest length whose tau is within {self.args.tau_margin} of the best length's and above "
            "the tau of MACs alone",
            "rows": [{**r, "val": {str(k): v for k, v in r["val"].items()}} for r in self.fid_rows],
        }


# -- writing ------------------------------------------------------------------------------------------------
def markdown(res: dict[str, Any]) -> str:
    sz, arms = res["sizes"], res["arms"]
    S = sz["train_subset"]
    m = res["machine"]
    gpu = "a CUDA GPU present (unused)" if m["cuda"] else "no GPU"
    lines = [
        "# Does the search beat its proposers? (resnet20_channels, CPU scale)",
        "",
        f"- date: {res['date']} (finished {res['finished']}; wall {fmt_s(res['wall_s'])})",
        f"- machine: {m['cpus']}-core CPU, {gpu}; torch {m['torch']} with {m['torch_threads']} thread(s); "
        f"{m['platform']}",
        f"- command: `{res['command']}`",
        f"- dataset: {res['dataset']['name']}"
        + (" (CIFAR-10, JPEG q75 copy)" if res["dataset"]["name"].startswith("cifar10") else "")
        + f": {S} training images (seeded subset), {sz['val']} validation, {sz['test']} test (final models only)",
        "",
        "## Sizes and why",
        "",
        f"- proposals: {', '.join(sz['proposers'])} at MACs ratios {', '.join(f'{v:g}' for v in sz['levels'])} "
        f"= {sz['proposals']} genotypes; reference for l1/fpgm: {sz['pretrain_epochs']}-epoch proxy pretrain",
        f"- candidates per arm: {sz['candidates_per_arm']}, each a {sz['proxy_epochs']}-epoch proxy run "
        f"({sz['proxy_epochs'] * S:,} image-epochs)",
        f"- final: scratch-e, {sz['final_epochs']} epochs, seeds {', '.join(map(str, sz['seeds']))}; "
        f"selection window +-{sz['window']:.0%} of the target MACs",
        f"- proxy fidelity: {sz['fidelity_genotypes']} genotypes x proxy lengths "
        f"{', '.join(map(str, sz['fidelity_epochs']))} epochs vs the {sz['final_epochs']}-epoch recipe",
        f"- planned: {res['plan']['runs']} runs, {res['plan']['image_epochs'] / 1e6:.2f}M image-epochs; measured "
        f"{res['measured_images_per_s']['pretrain_reference']:.0f} img/s training the full-width reference, "
        f"{(res['measured_images_per_s']['overall_trained_image_epochs_per_wall_s'] or 0):.0f} image-epochs per "
        "wall second over the whole run (validation, proposals and bookkeeping included)",
    ]
    if sz.get("why"):
        lines.append(f"- why: {sz['why']}")
    lines += [
        "",
        "Arms (same number of trained candidates, so the same proxy compute): **a** the proposals plus extra "
        "draws of the random proposer; **b** prunenas search, TPE on val_acc, one study per level seeded with "
        "that level's proposals; **c** the same studies with the random sampler and the same seeds. The seeded "
        "trials are the same runs as arm a's proposals, trained once and charged to every arm. "
        + (
            f"Each study is limited to its level's window on both sides (`--min macs=L(1-w)x --max macs=L(1+w)x`, "
            f"w = {sz['window']:g}); draws outside it are recorded infeasible untrained (MACs counted, no "
            "training), and a study is extended until it has trained its share of candidates (or drawn "
            f"{sz.get('trial_cap')}x that many). Draws per study (drawn / trained): "
            + ", ".join(f"{k} {v['drawn']}/{v['trained']}" for k, v in res.get("search_draws", {}).items())
            + "."
            if sz.get("band")
            else "Each study is limited above only (`--max macs=L(1+w)x`)."
        ),
        "",
        "## Final models (test accuracy %, mean +- std over seeds)",
        "",
        "| arm | " + " | ".join(f"MACs {lv:g}" for lv in sz["levels"]) + " | proxy front hypervolume |",
        "| --- | " + " | ".join("---:" for _ in sz["levels"]) + " | ---: |",
    ]
    for arm in ARMS:
        cells = []
        for lv in sz["levels"]:
            e = arms[arm]["levels"][str(lv)]
            cells.append("none in window" if e is None else f"{pct(e['test_mean'])} +- {pct(e['test_std'])}")
        lines.append(f"| {ARM_TITLE[arm]} | " + " | ".join(cells) + f" | {arms[arm]['proxy_hypervolume']:.4f} |")
    lines += [
        "",
        "Picked genotypes (best proxy validation accuracy within the window):",
        "",
        "| arm | level | genotype | from | MACs ratio | proxy val % | final val % | test % per seed |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for arm in ARMS:
        for lv in sz["levels"]:
            e = arms[arm]["levels"][str(lv)]
            if e is None:
                lines.append(f"| {ARM_TITLE[arm]} | {lv:g} | - | none within the window | | | | |")
                continue
            src = f"{e['proposer']} proposal" if e["proposer"] else e["origin"]
            lines.append(
                f"| {ARM_TITLE[arm]} | {lv:g} | {e['key']} | {src} | {e['macs_ratio']:.3f} | "
                f"{pct(e['proxy_val_acc'])} | {pct(e['val_mean'])} | {', '.join(pct(t) for t in e['test_accs'])} |"
            )
    lines += [
        "",
        "## Compute per arm (image-epochs)",
        "",
        "| arm | candidates | seeded | in windows | proxy | pretrain | finals | total | proxy trained in this arm |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm in ARMS:
        a, c = arms[arm], arms[arm]["compute"]
        win = ", ".join(f"{k}: {v}" for k, v in a["candidates_in_windows"].items())
        lines.append(
            f"| {ARM_TITLE[arm]} | {a['candidates']} | {a['seeded']} | {win} | {c['proxy_image_epochs']:,} | "
            f"{c['pretrain_image_epochs']:,} | {c['final_image_epochs']:,} | {c['total_image_epochs']:,} | "
            f"{c['proxy_trained_here_image_epochs']:,} |"
        )
    lines += [
        "",
        "Finals of a genotype picked by several arms are the same runs (charged to each arm). "
        f"The searches validate every epoch ({sz['val']:,} images), the benchmark's own runs only at the end, so "
        "wall time is not proportional to image-epochs.",
        "",
        "## Proxy fidelity",
        "",
        f"Kendall tau-b of validation accuracy against the {res['fidelity']['long_epochs']}-epoch recipe's, over "
        f"{res['fidelity']['genotypes']} genotypes (standard deviation of tau under no association: "
        f"{res['fidelity']['tau_se_independent']:.2f}).",
        "",
        "| ranking by | image-epochs per genotype | Kendall tau |",
        "| --- | ---: | ---: |",
    ]
    for t in res["fidelity"]["table"]:
        lines.append(f"| proxy, {t['epochs']} epoch(s) | {t['image_epochs_per_genotype']:,} | {t['tau']:.3f} |")
    lines.append(f"| MACs alone | 0 | {res['fidelity']['macs_tau']:.3f} |")
    cheapest = res["fidelity"]["cheapest_good_epochs"]
    lines += [
        "",
        f"Cheapest proxy that ranks well ({res['fidelity']['rule']}): "
        + (f"{cheapest} epoch(s)." if cheapest else "none (no proxy length ranks better than MACs alone)."),
        "",
        "## What is and is not significant at this scale",
        "",
    ]
    lines += significance_lines(res)
    return "\n".join(lines) + "\n"


def significance_lines(res: dict[str, Any]) -> list[str]:
    n_seeds = len(res["sizes"]["seeds"])
    out = [
        f"- Each final number is the mean of {n_seeds} seeds of one genotype: with {n_seeds} seeds a standard "
        "deviation is itself very uncertain and only large gaps can be told apart. Welch's t-test p values "
        "are listed for reference, not as evidence.",
    ]
    for c in res["comparisons"]:
        x, y = c["arms"]
        head = f"- MACs {c['level']:g}, {ARM_TITLE[x]} vs {ARM_TITLE[y]}: "
        if c.get("missing"):
            out.append(head + "not comparable (an arm had no candidate within the window).")
        elif c["same_genotype"]:
            out.append(head + "the same genotype was picked; identical runs, no difference by construction.")
        else:
            verdict = (
                "larger than the sum of both standard deviations"
                if c["beyond_sum_of_stds"]
                else "larger than either standard deviation but not their sum"
                if c["beyond_both_stds"]
                else "within one standard deviation: not distinguishable"
            )
            out.append(
                head + f"{100 * c['diff']:+.2f} points ({verdict}; Welch t {c['welch_t']:.2f}, p {c['welch_p']:.2f})."
            )
    fid = res["fidelity"]
    out.append(
        f"- Proxy fidelity: with {fid['genotypes']} genotypes a tau differs from chance only beyond about "
        f"{2 * fid['tau_se_independent']:.2f} (two standard deviations); differences between proxy lengths "
        "smaller than that are noise. Part of any tau over a wide MACs range is the size effect (MACs alone "
        "row)."
    )
    hv = {arm: res["arms"][arm]["proxy_hypervolume"] for arm in ARMS}
    out.append(
        "- Proxy Pareto fronts (one seed, proxy accuracy): hypervolume "
        + ", ".join(f"{ARM_TITLE[a]} {v:.4f}" for a, v in hv.items())
        + "; these are single noisy proxy runs, and arm b and c's fronts contain their seeds, i.e. arm a's "
        "proposals."
    )
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sz = res["sizes"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax0, ax1, ax2 = axes
    for arm in ARMS:
        a = res["arms"][arm]
        color = COLORS[arm]
        pts = [(c["macs_ratio"], 100 * c["val_acc"]) for c in a["candidate_list"]]
        if pts:
            ax0.scatter(*zip(*pts, strict=True), s=18, alpha=0.45, color=color, label=f"{ARM_TITLE[arm]} candidates")
        front = [(x, 100 * y) for x, y in a["proxy_front"]]
        if front:
            ax0.step(*zip(*front, strict=True), where="post", color=color, lw=1.6)
        for k, lv in enumerate(sz["levels"]):
            e = a["levels"][str(lv)]
            if e is None:
                continue
            offset = (ARMS.index(arm) - 1) * 0.006
            ax1.errorbar(
                e["macs_ratio"] + offset, 100 * e["test_mean"], yerr=100 * (e["test_std"] or 0), fmt="o",
                color=color, capsize=4, label=ARM_TITLE[arm] if k == 0 else None,
            )  # fmt: skip
            ax0.scatter([e["macs_ratio"]], [100 * e["proxy_val_acc"]], s=80, facecolors="none", edgecolors=color)
    for lv in sz["levels"]:
        for ax in (ax0, ax1):
            ax.axvspan(lv * (1 - sz["window"]), lv * (1 + sz["window"]), color="0.9", zorder=0)
    ax0.set_title(f"proxy candidates ({sz['proxy_epochs']} ep) and Pareto fronts; circles: picks")
    ax0.set_xlabel("MACs / reference")
    ax0.set_ylabel("validation accuracy %")
    ax0.legend(fontsize=7)
    ax1.set_title(f"retrained picks: test acc, mean +- std over {len(sz['seeds'])} seeds ({sz['final_epochs']} ep)")
    ax1.set_xlabel("MACs / reference")
    ax1.set_ylabel("test accuracy %")
    ax1.legend(fontsize=7)
    fid = res["fidelity"]
    for t in fid["table"]:
        xs = [100 * r["val"][str(t["epochs"])] for r in fid["rows"] if r["val_long"] is not None]
        ys = [100 * r["val_long"] for r in fid["rows"] if r["val_long"] is not None]
        ax2.scatter(xs, ys, s=18, label=f"proxy {t['epochs']} ep (tau {t['tau']:.2f})")
    ax2.set_title(f"proxy fidelity: {fid['genotypes']} genotypes")
    ax2.set_xlabel("proxy validation accuracy %")
    ax2.set_ylabel(f"{fid['long_epochs']}-epoch validation accuracy %")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{res['space']} on {res['dataset']['name']}, {sz['train_subset']} training images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the whole path on digits in a minute or two")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--train-subset", type=int, default=1500, help="training images S (seeded subset)")
    parser.add_argument("--val-size", type=int, default=None, help="validation images (default: the standard split)")
    parser.add_argument("--levels", default="0.3,0.5,0.7", help="target MACs ratios")
    parser.add_argument("--window", type=float, default=0.05, help="relative MACs window around each target")
    parser.add_argument(
        "--band", action=argparse.BooleanOptionalAction, default=True,
        help="searches limited to the window on both sides (--min and --max), not only above (--max)",
    )  # fmt: skip
    parser.add_argument(
        "--trial-cap", type=int, default=25,
        help="with --band: a level's study draws at most this many times its trained candidates",
    )  # fmt: skip
    parser.add_argument("--proposers", default="uniform,l1,fpgm,random")
    parser.add_argument("--candidates", type=int, default=18, help="proxy candidates per arm (>= the proposals)")
    parser.add_argument("--proxy-epochs", type=int, default=2)
    parser.add_argument("--pretrain-epochs", type=int, default=6, help="proxy pretrain of the reference for l1/fpgm")
    parser.add_argument("--final-epochs", type=int, default=6, help="the longer recipe (scratch-e) of the finals")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each final retraining")
    parser.add_argument("--fidelity-epochs", default="1,2,4", help="proxy lengths of the fidelity study")
    parser.add_argument("--fidelity-genotypes", type=int, default=16)
    parser.add_argument("--tau-margin", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: robust on a shared machine)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="root of the run folders (default runs/bench/search_quality/...)")
    parser.add_argument("--out-md", default=None)
    parser.add_argument("--out-json", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--why", default="", help="the reason for the sizes, written into the results")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")}
    if args.tiny:
        for k, v in TINY.items():
            if k not in given:
                setattr(args, k, v)
    n_levels = len(args.levels.split(","))
    n_props = len([p for p in args.proposers.split(",") if p]) * n_levels
    if args.candidates <= n_props or args.candidates % n_levels:
        parser.error(
            f"--candidates {args.candidates} must be a multiple of the {n_levels} levels and exceed the {n_props} "
            "proposals: each level's search is seeded with that level's proposals, so with no more trials it would "
            "train exactly the proposals (arm b = arm a)"
        )
    if args.proxy_epochs not in {int(v) for v in args.fidelity_epochs.split(",")}:
        parser.error("--fidelity-epochs must include --proxy-epochs (the candidates' own runs are one of them)")
    tag = f"{args.dataset}-n{args.train_subset}" + ("-tiny" if args.tiny else "")
    args.out = args.out or str(Path("runs/bench/search_quality") / tag)
    tmp = Path("/tmp/prunenas-search-quality-tiny")
    if args.tiny:
        args.out_md = args.out_md or str(tmp / "search-quality.md")
        args.out_json = args.out_json or str(tmp / "search-quality.json")
        args.plot = args.plot or str(tmp / "search-quality.png")
    args.command = "python benchmarks/search_quality.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    bench = Bench(args)
    if args.dry_run:
        runs, ie, stages = bench.plan()
        print(json.dumps({"runs": runs, "image_epochs": ie, "stages": stages}, indent=2))
        return 0
    res = bench.run()
    text = markdown(res)
    print(text)
    for path, content in ((args.out_md, text), (args.out_json, json.dumps(res, indent=2, default=str) + "\n")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
            print(f"wrote {path}")
    if args.plot:
        plot(res, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
