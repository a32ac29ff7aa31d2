"""The search-quality benchmark itself (benchmarks/search_quality.py runs it; see its docstring for the
protocol): `Bench` trains the reference, makes the proposals, runs the per-level searches of arms b and c,
arm a's extra draws, picks, retrains the picks and runs the proxy-fidelity study, and gathers the results.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import common
from search_quality_common import (
    ARM_TITLE,
    ARMS,
    SPACE,
    Progress,
    fmt_s,
    hypervolume,
    kendall_tau_b,
    mean_std,
    pareto_front,
    pct,
    proposals_at_levels,
    tau_standard_error,
    welch,
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
        made = proposals_at_levels(
            self.pn, self.space, self.proposers, self.levels, reference, self.splits, self.args.device,
            lambda msg: print(msg, flush=True),
        )  # fmt: skip
        self.proposals: list[dict[str, Any]] = [
            {"proposer": name, "target": level, "seed": 0, "genotype": g} for name, level, g in made
        ]
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
        """Arms b and c: one prunenas search per MACs level, limited to that level's window (see the docstring
        of search_quality.py), single objective val_acc, seeded with that level's proposals, N/levels trained
        each. (A Pareto search over the whole range puts its extra trials anywhere in MACs, mostly outside the
        windows of the levels, so only its seeds could be picked: the first CPU run showed exactly that.)"""
        per_level = self.args.candidates // len(self.levels)
        for level in self.levels:
            self._search_level(arm, sampler, reference, level, per_level)

    def _search_level(self, arm: str, sampler: str, reference: Path, level: float, trials: int) -> None:
        from prunenas.config import RunSettings
        from prunenas.search import SearchSettings, run_search
        from prunenas.search.config import prepare_search
        from prunenas.train import METRICS

        band = "-band" if self.args.band else ""
        out = self.root / f"search-{sampler}-e{self.args.proxy_epochs}-L{level:g}{band}"
        limit = f"macs={level * (1 + self.args.window):.4f}x"
        floor = (f"macs={level * (1 - self.args.window):.4f}x",) if self.args.band else ()
        settings = SearchSettings(
            budget="fast", trials=trials, proxy_epochs=self.args.proxy_epochs, sampler=sampler,
            proposers=tuple(self.proposers), reference=str(reference), final=False, export=False,
            study=f"bench-{sampler}-L{level:g}{band}", out=str(out), max=(limit,), min=floor,
            seed_targets=(level,),  # the study's seeds: the proposers at exactly this level
        )  # fmt: skip
        run = RunSettings(seed=0, device=self.args.device, quiet=True, channels_last=self.args.channels_last)
        config, _ = prepare_search(SPACE, search=settings, data=self.data_cfg, run=run, quiet=True)
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
                config = config.with_settings(trials=total)
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
        started = common.stamp()
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
        a = self.args
        machine = common.machine()
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
            "finished": common.stamp(),
            "machine": {
                "cpus": machine["cpu_count"],
                "cuda": machine["gpu"] is not None,
                "torch_threads": a.threads,
                "platform": machine["platform"],
                "processor": machine["cpu"]["model"],
                "torch": machine["torch"],
                "python": machine["python"],
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
