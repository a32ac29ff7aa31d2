"""Does the search beat its proposers? Three arms at the same training compute on resnet20_channels.

    python benchmarks/search_quality.py --tiny                       # the whole path on digits, 1-3 minutes
    python benchmarks/search_quality.py --evaluator inherit-bn ...   # a search judged by a cheap evaluator
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

With `--evaluator SPEC` the protocol is search_quality_evaluator.py's instead (its docstring): the proposers'
own picks against a scratch-proxy search and a search judged by the evaluator at equal wall time.

This file holds the flags and `main`; the benchmark's steps are `Bench` in search_quality_bench.py, the
arms, statistics and progress line are in search_quality_common.py, the Markdown report and the plot in
search_quality_report.py, the machine description and command line in common.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import common
from search_quality_bench import Bench
from search_quality_report import markdown, plot

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


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if any(a == "--evaluator" or a.startswith("--evaluator=") for a in given):
        import search_quality_evaluator

        return search_quality_evaluator.main(list(given))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_tiny(parser, "the whole path on digits in a minute or two")
    parser.add_argument("--dataset", default="cifar10")
    common.add_data_dir(parser, "../shared/datasets/cifar10-jpeg.tar.gz")
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
    common.add_threads(parser, 1, help="torch CPU threads (1: robust on a shared machine)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    common.add_device(parser, "cpu")
    parser.add_argument("--out", default=None, help="root of the run folders (default runs/bench/search_quality/...)")
    common.add_out_files(parser)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--why", default="", help="the reason for the sizes, written into the results")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    common.apply_tiny(args, argv, TINY)
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
    args.command = common.command_line(__file__, argv)
    bench = Bench(args)
    if args.dry_run:
        runs, ie, stages = bench.plan()
        print(json.dumps({"runs": runs, "image_epochs": ie, "stages": stages}, indent=2))
        return 0
    res = bench.run()
    text = markdown(res)
    print(text)
    for path, content in ((args.out_md, text), (args.out_json, common.to_json(res))):
        if path:
            common.write_text(path, content)
            print(f"wrote {path}")
    if args.plot:
        plot(res, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
