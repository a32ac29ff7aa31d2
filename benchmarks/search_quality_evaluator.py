"""Does a search judged by a cheap evaluator beat the proposers that seed it? `search_quality.py --evaluator
SPEC` runs this protocol (the proxy-search protocol stays in search_quality_bench.py).

    python benchmarks/search_quality.py --evaluator inherit-bn --space tiny --dataset digits \\
        --out benchmarks/results/DATE-cpu-search-quality-evaluator

Protocol (every size is a flag; the results record the ones used):

- Space and data: `--space` (a name, a TOML path, or `tiny`: the ResNet-8 of benchmarks/common.py),
  `--dataset` with its standard validation split; candidates are ranked on validation only, the test split is
  evaluated once, on the final retrained models.
- Reference: one proxy-recipe pretrain of the space's reference (`--pretrain-epochs`), shared by every arm:
  l1 scores its weights, evaluators that score trained weights cut their candidates from it.
- Proposer arms: each of `--proposers` (default uniform, l1) at each MACs level of `--levels`: that proposer's
  genotype is its pick (what a user of the proposer alone would train).
- Search arms, one TPE study per level limited to the level's window (`--min/--max macs` at +-`--window`),
  seeded with that level's proposals:
  a. `search-scratch`: `--scratch-candidates` candidates judged by from-scratch proxy runs of
     `--proxy-epochs` epochs (today's default). Its wall time at each level is the budget of the next arm;
  b. `search-EVALUATOR`: the same study judged by `--evaluator` for the same wall time (Optuna's timeout),
     at most `--trial-cap` trials: equal wall time, so it sees as many more candidates as it is cheaper.
  Each search's pick is its best validation score within the window.
- Finals: every pick (a genotype picked by several arms is trained once) retrained with `scratch-e` for
  `--final-epochs` on `--seeds` seeds and tested once: mean +- std of test accuracy per arm and level, and
  Welch's t-test of each search arm against each proposer arm (two-sided p).
- Costs: candidates per CPU-hour of each search arm (candidates judged / its wall time), its seconds per
  candidate, the reference's one-off pretrain.

Every run and study lives under `--work` and is reused on a rerun (the studies resume their journals, the
final runs are found by their identity). Nothing here runs in the tests but `--tiny`'s path in a manual check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import common
from search_quality_common import fmt_s, pct, proposals_at_levels, welch

TINY = {"pretrain_epochs": 2, "proxy_epochs": 1, "scratch_candidates": 4, "final_epochs": 2, "seeds": 2}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluator", required=True, help="the cheap evaluator, NAME or NAME:OPTION=VALUE,...")
    common.add_tiny(ap, "the whole path with the smallest sizes (a minute or two on digits)")
    ap.add_argument("--space", default="tiny", help="a space name or TOML path; tiny: a ResNet-8 (see common)")
    ap.add_argument("--dataset", default="digits")
    common.add_data_dir(ap, None)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--val-size", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--levels", default="0.3,0.5,0.7", help="target MACs ratios")
    ap.add_argument("--window", type=float, default=0.05, help="relative MACs window around each target")
    ap.add_argument("--proposers", default="uniform,l1", help="the proposer arms, also the searches' seeds")
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--proxy-epochs", type=int, default=2, help="epochs of search-scratch's proxy runs")
    ap.add_argument("--scratch-candidates", type=int, default=24, help="search-scratch's candidates per level")
    ap.add_argument("--trial-cap", type=int, default=2000, help="the cheap search's trials per level at most")
    ap.add_argument("--final-epochs", type=int, default=20, help="epochs of the finals (scratch-e)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of each final")
    common.add_threads(ap, 2)
    common.add_device(ap, "cpu")
    ap.add_argument("--work", default="runs/bench/search_quality_evaluator", help="runs and studies (resumable)")
    common.add_out(ap, folder=False, required=True)
    args = ap.parse_args(argv)
    common.apply_tiny(args, argv, TINY)
    return args


class EvaluatorBench:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        import prunenas as pn
        from prunenas.config import DataConfig
        from prunenas.fidelity.settings import evaluator_specs
        from prunenas.prepare import fit_to_data

        torch.set_num_threads(args.threads)
        self.args, self.pn = args, pn
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.space_ref = args.space
        if args.space == "tiny":
            self.space_ref = str(self.work / "tiny_resnet8.toml")
            Path(self.space_ref).write_text(common.tiny_resnet8_toml("tiny_resnet8"), encoding="utf-8")
        (spec,) = evaluator_specs([args.evaluator])
        self.evaluator = spec
        sizes = {"train_subset": args.train_subset, "val_size": args.val_size, "image_size": args.image_size}
        self.data_cfg = DataConfig(
            dataset=args.dataset, data_dir=args.data_dir, **{k: v for k, v in sizes.items() if v is not None}
        )
        self.splits = pn.load_data(self.data_cfg, seed=0)
        self.space, _ = fit_to_data(
            pn.get_space(self.space_ref), image_size=args.image_size, quiet=True, dataset=args.dataset
        )
        self.levels = [float(v) for v in args.levels.split(",")]
        self.proposers = [p for p in args.proposers.split(",") if p]
        self.seeds = list(range(args.seeds))
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{fmt_s(time.perf_counter() - self.t0)}] {msg}", flush=True)

    def run_settings(self, seed: int, epochs: int) -> Any:
        from prunenas.config import RunSettings

        return RunSettings(seed=seed, device=self.args.device, quiet=True, plot=False, eval_every=max(1, epochs),
                           threads=self.args.threads)  # fmt: skip

    def train(self, genotype: Any, recipe_name: str, epochs: int, seed: int, test: bool) -> tuple[dict[str, Any], Path]:
        """One run in a folder named by its identity: found when finished, resumed when interrupted; its
        metrics and folder."""
        from prunenas.train import METRICS, run_id, run_identity, train

        recipe = self.pn.api.make_recipe_for(genotype, recipe_name, epochs=epochs)
        identity = run_id(run_identity(genotype, recipe, seed, self.splits))
        folder = self.work / "runs" / f"{genotype.key}-{recipe.name}-e{epochs}-s{seed}-{identity}"
        stored = json.loads((folder / METRICS).read_text()) if (folder / METRICS).exists() else {}
        if stored.get("finished") and (not test or stored.get("test_acc") is not None):
            return stored, folder
        result = train(self.space, genotype, self.splits, recipe, self.run_settings(seed, epochs), out_dir=folder,
                       evaluate_test=test)  # fmt: skip
        return result.to_dict(), folder

    def pretrain(self) -> Path:
        self.log(f"pretraining the reference, {self.args.pretrain_epochs} epochs (proxy recipe)")
        rec, folder = self.train(self.space.reference(), "proxy", self.args.pretrain_epochs, 0, test=False)
        self.pretrain_s = rec["wall_time_s"]
        self.reference_val = rec["val_acc"]
        return folder / "checkpoint.pt"

    def propose(self, reference: Path) -> dict[str, dict[float, Any]]:
        out: dict[str, dict[float, Any]] = {}
        made = proposals_at_levels(
            self.pn, self.space, self.proposers, self.levels, reference, self.splits, self.args.device, self.log
        )
        for name, level, g in made:
            out.setdefault(name, {})[level] = g
            self.log(f"proposal {name} at {level:g}: {g.key}")
        return out

    def prepare_supernet(self) -> dict[str, Any]:
        """`prunenas supernet` trains the supernet once, ahead of the searches (a one-off cost, reported apart),
        into a folder every level's search reads it from; the evaluator's options with that folder."""
        import subprocess

        options = dict(self.evaluator.options)
        options.setdefault("dir", str(self.work / "supernet"))
        argv = [
            sys.executable, "-m", "prunenas.cli", "supernet", "--space", self.space_ref, "--dataset", self.args.dataset,
            "--seed", "0", "--device", self.args.device, "--threads", str(self.args.threads),
        ]  # fmt: skip
        for flag, value in (("--data-dir", self.args.data_dir), ("--train-subset", self.args.train_subset),
                            ("--val-size", self.args.val_size), ("--image-size", self.args.image_size)):  # fmt: skip
            if value is not None:
                argv += [flag, str(value)]
        for key, value in options.items():
            argv += [f"--supernet-{key.replace('_', '-')}", str(value)]
        self.log(f"training the supernet: {' '.join(argv[2:])}")
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        self.supernet_s = time.perf_counter() - start
        self.log(f"supernet ready in {self.supernet_s:.0f} s")
        return options

    def search(self, arm: str, level: float, reference: Path, *, evaluator: str, options: dict[str, Any],
               trials: int, timeout: float | None) -> dict[str, Any]:  # fmt: skip
        """One TPE study at `level`'s window, seeded with the proposals there; its candidates and wall time."""
        import optuna

        from prunenas.config import RunSettings
        from prunenas.search import SearchSettings, run_search
        from prunenas.search.config import prepare_search

        w = self.args.window
        folder = f"{arm}-L{level:g}".replace(":", "-").replace(",", "+")  # a folder's and a study's name
        settings = SearchSettings(
            budget="fast", trials=trials, proxy_epochs=self.args.proxy_epochs, sampler="tpe",
            proposers=tuple(self.proposers), reference=str(reference), final=False, export=False,
            study=folder, out=str(self.work / folder), max=(f"macs={level * (1 + w):.4f}x",),
            min=(f"macs={level * (1 - w):.4f}x",), seed_targets=(level,), evaluator=evaluator, timeout=timeout,
        )  # fmt: skip
        run = RunSettings(seed=0, device=self.args.device, quiet=True, threads=self.args.threads)
        config, space = prepare_search(
            self.space_ref, search=settings, data=self.data_cfg, run=run, evaluators={evaluator: options} if options
            else None, quiet=True,
        )  # fmt: skip
        done = Path(settings.out or "") / "bench-search.json"  # a finished search is read, never extended
        if done.exists():
            return dict(json.loads(done.read_text()))

        def judged_in(study: Any) -> list[dict[str, Any]]:
            out, seen = [], set()
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                a = t.user_attrs
                if a.get("infeasible") or a.get("val_acc") is None or a["key"] in seen:
                    continue
                seen.add(a["key"])
                out.append({
                    "key": a["key"], "genotype": a["genotype"], "macs_ratio": a["macs_ratio"], "val_acc": a["val_acc"],
                    "origin": a.get("origin"), "eval_s": a.get("eval_time_s"),
                })  # fmt: skip
            return out

        start = time.perf_counter()
        total = trials
        while True:  # without a timeout: extended until `trials` candidates fell in the window and were judged
            outcome = run_search(config, space, self.splits, log=lambda m: None)
            judged = judged_in(outcome.study)
            if timeout is not None or len(judged) >= trials or total >= trials * 25:
                break
            total += trials - len(judged)
            config = config.with_settings(trials=total)
        wall = time.perf_counter() - start
        drawn = sum(1 for t in outcome.study.get_trials(deepcopy=False) if t.user_attrs.get("key"))
        inside = [c for c in judged if abs(c["macs_ratio"] / level - 1) <= w + 1e-9]
        pick = max(inside, key=lambda c: c["val_acc"]) if inside else None
        self.log(f"{arm} at {level:g}: {len(judged)} judged ({drawn} drawn) in {wall:.0f} s; pick "
                 f"{pick['key'] if pick else '-'} val {pct(pick['val_acc']) if pick else '-'}")  # fmt: skip
        result = {"judged": len(judged), "drawn": drawn, "wall_s": wall, "pick": pick, "candidates": judged}
        done.write_text(json.dumps(result), encoding="utf-8")
        return result

    def run(self) -> dict[str, Any]:
        from prunenas.genotype import Genotype

        reference = self.pretrain()
        proposals = self.propose(reference)
        options = self.prepare_supernet() if self.evaluator.name == "supernet" else dict(self.evaluator.options)
        cheap = f"search-{self.evaluator.label}"
        arms: dict[str, dict[float, dict[str, Any]]] = {}
        for name, by_level in proposals.items():
            arms[name] = {lv: {"pick": {"key": g.key, "genotype": g.to_dict(), "origin": f"proposer {name}"}}
                          for lv, g in by_level.items()}  # fmt: skip
        arms["search-scratch"], arms[cheap] = {}, {}
        for level in self.levels:
            base = self.search("search-scratch", level, reference, evaluator="scratch", options={},
                               trials=self.args.scratch_candidates, timeout=None)  # fmt: skip
            arms["search-scratch"][level] = base
            arms[cheap][level] = self.search(
                cheap, level, reference, evaluator=self.evaluator.name, options=options,
                trials=self.args.trial_cap, timeout=base["wall_s"],
            )  # fmt: skip
        finals: dict[str, list[dict[str, Any]]] = {}
        picks = [(arm, lv, r["pick"]) for arm, by in arms.items() for lv, r in by.items() if r.get("pick")]
        keys = list(dict.fromkeys(p["key"] for _, _, p in picks))
        for i, key in enumerate(keys, 1):
            g = Genotype.from_dict(next(p["genotype"] for _, _, p in picks if p["key"] == key))
            finals[key] = []
            for seed in self.seeds:
                r, _ = self.train(g, "scratch-e", self.args.final_epochs, seed, test=True)
                finals[key].append({"seed": seed, "val_acc": r["val_acc"], "test_acc": r["test_acc"],
                                    "wall_s": r.get("wall_time_s")})  # fmt: skip
                self.log(f"final {i}/{len(keys)} {key} seed {seed}: test {pct(r['test_acc'])}")
        return self.results(arms, finals, cheap)

    def results(self, arms: dict[str, Any], finals: dict[str, Any], cheap: str) -> dict[str, Any]:
        from prunenas.cost import genotype_cost
        from prunenas.genotype import Genotype

        rows = []
        for arm, by_level in arms.items():
            for level, r in by_level.items():
                pick = r.get("pick")
                tests = [f["test_acc"] for f in finals.get(pick["key"], [])] if pick else []
                macs = genotype_cost(self.space, Genotype.from_dict(pick["genotype"])).macs_ratio if pick else None
                rows.append({
                    "arm": arm, "level": level, "pick": pick["key"] if pick else None, "macs_ratio": macs,
                    "judged": r.get("judged"), "drawn": r.get("drawn"), "wall_s": r.get("wall_s"),
                    "candidates_per_cpu_hour": (r["judged"] / r["wall_s"] * 3600 if r.get("wall_s") else None),
                    "pick_val_score": pick.get("val_acc") if pick else None, "test": tests,
                    "test_mean": statistics.mean(tests) if tests else None,
                    "test_std": statistics.stdev(tests) if len(tests) > 1 else None,
                })  # fmt: skip
        tests = []
        for search in ("search-scratch", cheap):
            for name in self.proposers:
                for level in self.levels:
                    a = next(r for r in rows if r["arm"] == search and r["level"] == level)
                    b = next((r for r in rows if r["arm"] == name and r["level"] == level), None)
                    if b is None:  # the proposer has no genotype at this level
                        continue
                    t, p = welch(a["test"], b["test"])
                    diff = a["test_mean"] - b["test_mean"] if a["test"] and b["test"] else None
                    tests.append({"search": search, "against": name, "level": level, "difference": diff,
                                  "same_pick": a["pick"] == b["pick"], "t": t if t == t else None,
                                  "p": p if p == p else None})  # fmt: skip
        machine = common.machine()
        return {
            "date": common.stamp(), "cpu": machine["cpu"]["model"], "cores": machine["cpu_count"],
            "torch": machine["torch"], "python": machine["python"], "command": common.command_line(__file__),
            "settings": {k: v for k, v in vars(self.args).items() if k != "out"}, "space": self.space.name,
            "reference": {"pretrain_s": self.pretrain_s, "val_acc": self.reference_val}, "evaluator": cheap,
            "supernet_s": getattr(self, "supernet_s", None),
            "rows": rows, "welch": tests, "wall_s": time.perf_counter() - self.t0,
        }  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        f"# Search judged by {res['evaluator'][7:]} vs its proposers: {res['space']} / {s['dataset']} "
        f"({res['date'][:10]})",
        "",
        f"Machine: {res['cpu']}, {res['cores']} cores, torch {res['torch']}, Python {res['python']}; "
        f"{res['wall_s']:.0f} s in this process (work found finished excluded).",
        f"Command: `{res['command']}`.",
        f"Reference: {s['pretrain_epochs']} proxy epochs, val {pct(res['reference']['val_acc'])}, "
        f"{res['reference']['pretrain_s']:.0f} s (shared by l1 and the evaluator)"
        + (
            f"; the supernet, trained once ahead of the searches (`prunenas supernet`), {res['supernet_s']:.0f} s"
            if res.get("supernet_s")
            else ""
        )
        + ". Finals: scratch-e "
        f"{s['final_epochs']} epochs x {s['seeds']} seeds, test accuracy mean +- std.",
        "",
        "| level | arm | pick | MACs | judged (drawn) | search s | candidates / CPU-hour | pick's val score | "
        "final test |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(res["rows"], key=lambda r: (r["level"], r["arm"])):
        final = f"{pct(r['test_mean'])} +- {pct(r['test_std'] or 0.0)}" if r["test_mean"] is not None else "-"
        cph = f"{r['candidates_per_cpu_hour']:.0f}" if r["candidates_per_cpu_hour"] else "-"
        judged = f"{r['judged']} ({r['drawn']})" if r["judged"] is not None else "-"
        wall = f"{r['wall_s']:.0f}" if r["wall_s"] else "-"
        val = pct(r["pick_val_score"]) if r["pick_val_score"] is not None else "-"
        macs = f"{r['macs_ratio']:.3f}" if r["macs_ratio"] is not None else "-"
        lines.append(f"| {r['level']:g} | {r['arm']} | {r['pick']} | {macs} | {judged} | {wall} | {cph} | {val} | "
                     f"{final} |")  # fmt: skip
    lines += [
        "",
        "Welch's t-test of each search's pick against each proposer's (final test accuracy):",
        "",
        "| level | search | against | difference (points) | t | p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w in res["welch"]:
        diff = f"{w['difference'] * 100:+.2f}" if w["difference"] is not None else "-"
        t = f"{w['t']:.2f}" if w["t"] is not None else "-"
        p = "- (the same pick)" if w["same_pick"] else (f"{w['p']:.3f}" if w["p"] is not None else "-")
        lines.append(f"| {w['level']:g} | {w['search']} | {w['against']} | {diff} | {t} | {p} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    res = EvaluatorBench(args).run()
    text = markdown(res)
    common.write_results(args.out, res, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
