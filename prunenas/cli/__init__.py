"""Command line: argument parsing only; the work is done by the modules it calls.

The data, recipe, run and search flags are generated from the config tree (`prunenas.config`,
`prunenas.recipes.Recipe`, `prunenas.search.SearchSettings`): name, default and help text come from
the dataclass fields, and every value is validated by the dataclass it lands in.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 a bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import NoReturn

from prunenas import __version__, distributed, interrupts
from prunenas.config import DataConfig, RunSettings
from prunenas.errors import PrunenasError
from prunenas.recipes import RECIPES, TEACHER_HELP, Recipe
from prunenas.report import PLOT_FORMATS
from prunenas.rethink.settings import RethinkSettings
from prunenas.search import SearchConfig

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (what is wrong + where to look) and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise PrunenasError(f"{message} (see `{self.prog} --help`)")


def _handler(module: str, name: str) -> Handler:
    """A handler imported when its command runs (keeps `prunenas --help` fast)."""

    def run(args: argparse.Namespace) -> int:
        fn: Handler = getattr(import_module(f"prunenas.cli.{module}"), name)
        return fn(args)

    return run


def _json_flag(p: argparse.ArgumentParser, what: str = "print JSON instead of a table") -> None:
    p.add_argument("--json", action="store_true", help=what)


def add_recipe_args(p: argparse.ArgumentParser, default: str | None = "standard") -> None:
    """The recipe fields as flags; with a `default` recipe name also --recipe and --scratch-b-cap (a
    search trains candidates with the proxy recipe: its epochs are --proxy-epochs)."""

    g = Recipe.add_arguments(p, skip=() if default else ("epochs",))
    if default:
        g.add_argument("--recipe", default=default, choices=RECIPES, help=f"training recipe (default {default})")
        g.add_argument(
            "--scratch-b-cap", type=float, default=None, metavar="X", help="cap scratch-b epochs at X times E"
        )
    _set_arg(g)


def _set_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--set", action="append", dest="recipe_set", metavar="KEY=VALUE",
        help="a recipe setting by its name (repeatable), e.g. --set milestones=[0.3,0.6] --set nesterov=true",
    )  # fmt: skip


def add_training_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options of a command that trains one run (train, pretrain)."""
    p.add_argument("--out", help=f"run folder (default {default_out}); an existing run resumes")
    p.add_argument("--fresh", action="store_true", help="discard a checkpoint in --out and start over")
    _json_flag(p, "print the result as JSON")
    add_recipe_args(p)
    DataConfig.add_arguments(p)
    RunSettings.add_arguments(p)


def _teacher_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    """--teacher of `train` and `rethink` (`search` has it as a `SearchSettings` field, beside --reference);
    `what`: what the command does with it."""

    p.add_argument("--teacher", metavar="CKPT", help=f"{TEACHER_HELP}{what} (default: none)")


def _target_args(p: argparse.ArgumentParser, title: str) -> None:
    tg = p.add_argument_group(title)
    tg.add_argument("--ratio", type=float, help="fraction of prunable channels/weights removed, in [0, 1)")
    tg.add_argument("--macs-ratio", type=float, help="target MACs / reference MACs, in (0, 1] (met within 2%%)")
    tg.add_argument("--density", type=float, help="fraction of prunable weights kept (density spaces), in (0, 1]")
    tg.add_argument(
        "--latency-ratio",
        type=float,
        help="target latency / reference latency, in (0, 1], as predicted for ONNX Runtime on this CPU at batch 1 "
        "(met within 2%% of the prediction; the predictor is calibrated once per space and cached)",
    )


def build_parser() -> argparse.ArgumentParser:
    import textwrap

    from prunenas.recipes import KD_FIELDS, Recipe

    # = prunenas.export.exporter.DEFAULT_OPSET and MIN_OPSET, prunenas.quantize.PRECISIONS,
    # prunenas.export.precision.RUNTIMES and CALIBRATION_IMAGES (not imported: that loads torch; a test checks)
    default_opset, min_opset = 18, 13
    precisions, runtimes, calibration = ("fp32", "fp16", "int8"), ("onnxruntime", "openvino", "tensorrt"), 256
    cifar = "../shared/datasets/cifar10-jpeg.tar.gz"

    def command(name: str, help: str, *examples: str, parent: argparse._SubParsersAction | None = None) -> _Parser:
        """A subcommand whose --help ends with `examples:` (kept as written, one command a line)."""
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
        p: _Parser = (parent or sub).add_parser(
            name, help=help, description=textwrap.fill(help[:1].upper() + help[1:] + ".", 100), epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        return p

    parser = _Parser(
        prog="prunenas",
        description="Network pruning as architecture search: pruning methods propose architectures "
        "(genotypes), Optuna searches them, candidates train from scratch, winners export to ONNX.",
        epilog="examples:\n  prunenas search --space resnet56_channels --dataset digits --budget smoke\n"
        "  prunenas cost li2017_resnet56_b\n\n`prunenas COMMAND --help` explains a command, with examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prunenas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = command(
        "spaces", "list the search spaces (or `spaces show SPACE`)",
        "prunenas spaces",
        "prunenas spaces show resnet56_channels",
    )  # fmt: skip
    _json_flag(p)
    p.set_defaults(handler=_handler("commands", "cmd_spaces"))
    spaces_sub = p.add_subparsers(dest="spaces_command", metavar="show", parser_class=_Parser)
    ps = command(
        "show", "a space's genes in network order, bounds, reference genotype, cost",
        "prunenas spaces show resnet56_channels",
        "prunenas spaces show my_space.toml --json    # a TOML file that may `extends = \"resnet56_channels\"`",
        parent=spaces_sub,
    )  # fmt: skip
    ps.add_argument("space", help="space name (see `prunenas spaces`) or path to a space .toml")
    ps.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of a table")
    ps.set_defaults(handler=_handler("commands", "cmd_spaces_show"))

    p = command(
        "cost", "MACs and params of a genotype (conv+linear multiply-adds, batch 1)",
        "prunenas cost li2017_resnet56_b",
        "prunenas cost resnet56_channels --json    # a space name: its reference (unpruned) model",
    )  # fmt: skip
    p.add_argument("genotype", help="genotype JSON file, or the name of a shipped genotype (e.g. li2017_resnet56_b)")
    p.add_argument(
        "--space", help="space name or .toml path to use instead of the genotype's own `space` (default: its own)"
    )
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the space's, 10)")
    _json_flag(p, "print JSON (macs and params as integers)")
    p.set_defaults(handler=_handler("commands", "cmd_cost"))

    p = command(
        "train", "train a genotype from scratch (or fine-tune it) and write metrics",
        f"prunenas train li2017_resnet56_b --recipe scratch-e --data-dir {cifar}",
        "prunenas train resnet20_channels --dataset digits --recipe proxy --epochs 3    # a CPU check",
    )  # fmt: skip
    p.add_argument("genotype", help="genotype JSON file, shipped genotype name, or space name (its reference)")
    p.add_argument("--space", help="space name or .toml path instead of the genotype's own (default: its own)")
    p.add_argument(
        "--weights", metavar="CKPT", help="start from these weights (for --recipe finetune; default: a fresh init)"
    )
    _teacher_arg(p)
    add_training_args(p, "runs/train/SPACE-KEY-RECIPE-sSEED-RUNID")
    p.set_defaults(handler=_handler("commands", "cmd_train"))

    p = command(
        "pretrain", "train a space's reference model (weights for proposers: --reference)",
        f"prunenas pretrain --space resnet56_channels --data-dir {cifar}",
        "prunenas pretrain --space resnet20_channels --dataset digits --recipe proxy --epochs 3",
    )  # fmt: skip
    p.add_argument("--space", required=True, help="space name or .toml path")
    add_training_args(p, "runs/pretrain/SPACE-KEY-RECIPE-sSEED-RUNID")
    p.set_defaults(handler=_handler("commands", "cmd_pretrain"))

    p = command(
        "proposers", "list the pruning methods that propose architectures",
        "prunenas proposers",
        "prunenas proposers --json    # with each proposer's options",
    )  # fmt: skip
    _json_flag(p, "print JSON (with each proposer's options)")
    p.set_defaults(handler=_handler("commands", "cmd_proposers"))

    for module in ("fidelity_command", "supernet_command"):  # each defines its command's parser and handler
        try:
            add_command = import_module(f"prunenas.cli.{module}").add_command
        except ModuleNotFoundError:  # not written yet
            continue
        add_command(command, _handler(module, "run"))

    p = command(
        "evaluators", "list the evaluators a search judges its candidates with (--evaluator)",
        "prunenas evaluators",
        "prunenas evaluators --json    # with each evaluator's options",
    )  # fmt: skip
    _json_flag(p, "print JSON (with each evaluator's options)")
    p.set_defaults(handler=_handler("commands", "cmd_evaluators"))

    p = command(
        "propose", "run a pruning method and write the genotype it decides",
        "prunenas propose --space resnet56_channels --proposer l1-paper --ratio 0.5 -o l1-half.json",
        "prunenas propose --space resnet20_density --proposer snip --density 0.1 --dataset digits -o snip.json",
    )  # fmt: skip
    p.add_argument("--space", required=True, help="space name or .toml path")
    p.add_argument("--proposer", required=True, help="pruning method (see `prunenas proposers`)")
    _target_args(p, "target (exactly one)")
    p.add_argument(
        "--reference", metavar="CKPT", help="trained reference weights (from `prunenas pretrain`; default: none)"
    )
    p.add_argument(
        "--pretrain-epochs", type=int, metavar="N",
        help="train a quick N-epoch reference when none is given (default: none; a proposer that needs one stops)",
    )  # fmt: skip
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="proposer option (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the genotype JSON here (default: only print it)")
    _json_flag(p, "print the genotype as JSON")
    DataConfig.add_arguments(p, defaults={"dataset": "none: only proposers that need data load one (cifar10)"})
    RunSettings.add_arguments(p, only=("device", "seed", "quiet"))
    p.set_defaults(handler=_handler("commands", "cmd_propose"))

    p = command(
        "show", "per-layer widths or densities of a genotype against the reference, with its MACs and params",
        "prunenas show li2017_resnet56_b --plot profile.pdf",
        "prunenas show l1-half.json --plot profile --plot-format svg    # writes profile.svg",
    )  # fmt: skip
    p.add_argument("genotype", help="genotype JSON file, shipped genotype name, or space name")
    p.add_argument("--space", help="space name or .toml path instead of the genotype's own (default: its own)")
    p.add_argument(
        "--plot", metavar="FILE",
        help="also write a bar chart of the profile; its format is the suffix (.png, .svg, .pdf) (default: no plot)",
    )  # fmt: skip
    p.add_argument(
        "--plot-format", choices=PLOT_FORMATS, default=None,
        help="format of --plot: png, svg or pdf (default: FILE's suffix; png when it has none)",
    )  # fmt: skip
    _json_flag(p)
    p.set_defaults(handler=_handler("commands", "cmd_show"))

    p = command(
        "search", "search architectures: proposer-seeded Optuna study, proxy training, export",
        "prunenas search --space resnet56_channels --dataset digits --budget smoke    # minutes on a CPU",
        f"prunenas search --space resnet56_channels --max macs=0.5x --gpus 0,1 --data-dir {cifar}",
    )  # fmt: skip
    p.add_argument("--space", required=True, help="space name or .toml path")
    _json_flag(p, "print the outcome as JSON")
    # the search's settings, the recipe changes of its candidates, its metrics' options, data and run: one tree
    SearchConfig.add_arguments(p, skip=("recipe.epochs",))  # a candidate's epochs are --proxy-epochs
    _set_arg(p)
    p.set_defaults(handler=_handler("run_commands", "cmd_search"))

    p = command(
        "rethink", "Rethinking the Value of Network Pruning: unpruned vs fine-tuned vs scratch-E/B, N seeds each",
        f"prunenas rethink --space resnet56_channels --genotype li2017_resnet56_b --seeds 5 --data-dir {cifar}",
        "prunenas rethink --space resnet20_channels --proposer l1 --ratio 0.5 --dataset digits --budget smoke",
    )  # fmt: skip
    p.add_argument("--space", required=True, help="space name or .toml path (channels or density)")
    p.add_argument("--proposer", help="pruning method that decides the genotype (see `prunenas proposers`)")
    _target_args(p, "target of --proposer (exactly one)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="proposer option (repeatable)")
    p.add_argument("--genotype", metavar="FILE", help="a fixed pruned genotype (file or shipped name), not --proposer")
    p.add_argument("--dry-run", action="store_true", help="print the plan (arms, seeds, epochs, totals); train nothing")
    RethinkSettings.add_arguments(p)
    _teacher_arg(p, "; adds the arm scratch-e-kd; `reference`: the unpruned arm's seed-s model, or --reference")
    Recipe.add_arguments(p, only=KD_FIELDS, title="distillation (the scratch-e-kd arm, with --teacher)")
    _json_flag(p, "print the plan or the outcome as JSON")
    DataConfig.add_arguments(p)
    RunSettings.add_arguments(p)
    p.set_defaults(handler=_handler("run_commands", "cmd_rethink"))

    p = command(
        "export", "export a trained run to ONNX (verified with onnx.checker and ONNX Runtime)",
        "prunenas export runs/train/resnet56_channels-4ae1233ffbaf219d-scratch-e-s0-RUNID --benchmark",
        "prunenas export RUN_DIR --opset 13 -o exports/r56b-opset13    # for an older ONNX Runtime",
        "prunenas export RUN_DIR --precision int8                      # + model.int8.onnx, measured against FP32",
        "prunenas export RUN_DIR --precision int8 --runtime openvino   # measured in OpenVINO (parity checked there)",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `prunenas train` (checkpoint.pt etc.)")
    p.add_argument("-o", "--out", metavar="DIR", help="export folder (default exports/SPACE/NAME)")
    p.add_argument("--name", help="export name (default: the genotype key, or the run folder's name if taken)")
    p.add_argument(
        "--space",
        help="space name, .toml path or model factory the run was trained in (default: the one the run records)",
    )
    p.add_argument(
        "--opset", type=int, default=default_opset, metavar="N",
        help=f"ONNX opset of model.onnx, {min_opset} up to the newest the installed torch exports "
        f"(default {default_opset})",
    )  # fmt: skip
    p.add_argument("--benchmark", action="store_true", help="measure ONNX Runtime latency and store it in model.json")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 64], metavar="N", help="latency batch sizes (default 1 64)"
    )
    p.add_argument("--repeats", type=int, default=50, metavar="N", help="timed runs per batch size (default 50)")
    p.add_argument(
        "--provider", default="auto", help="ONNX Runtime provider: auto (CUDA if usable), cpu, cuda (default auto)"
    )
    p.add_argument(
        "--precision", choices=precisions, default="fp32",
        help="also write model.<precision>.onnx: int8 (static post-training quantization, QDQ, per-channel weights) "
        "or fp16, with its test accuracy, top-1 agreement, largest logit difference and latency against the FP32 "
        "model on --runtime; model.onnx (FP32) stays the verified reference (default fp32: only model.onnx)",
    )  # fmt: skip
    p.add_argument(
        "--runtime", choices=runtimes, default="onnxruntime",
        help="runtime the --precision copy and the FP32 model are measured on: onnxruntime (--provider chooses CPU "
        "or CUDA), openvino (CPU; also checks the FP32 parity there) or tensorrt (GPU) (default onnxruntime)",
    )  # fmt: skip
    p.add_argument(
        "--calibration-images", type=int, default=calibration, metavar="N",
        help=f"--precision int8: training images (a seeded sample) the quantizer calibrates on (default {calibration})",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="intra-op threads of the latency measurements (default: the runtime's own)",
    )  # fmt: skip
    p.add_argument(
        "--engine", choices=("tensorrt",), default=None,
        help="also write a serialized engine at --precision: tensorrt writes model.<precision>.plan (needs the "
        "tensorrt package and an NVIDIA GPU; the engine runs on that GPU and TensorRT version only)",
    )  # fmt: skip
    p.add_argument("--dataset", default=None, help="test images for the parity check (default: the run's dataset)")
    p.add_argument("--data-dir", default=None, help="dataset folder or archive (default: $PRUNENAS_DATA / the run's)")
    _json_flag(p, "print model.json (plus the output folder) as JSON")
    p.set_defaults(handler=_handler("run_commands", "cmd_export"))

    p = command(
        "evaluate", "test accuracy of an exported model.onnx with ONNX Runtime or OpenVINO",
        "prunenas evaluate exports/resnet56_channels/4ae1233ffbaf219d/model.onnx",
        f"prunenas evaluate model.onnx --dataset cifar10 --data-dir {cifar} --provider cpu",
        "prunenas evaluate exports/resnet56_channels/4ae1233ffbaf219d/model.int8.onnx --runtime openvino",
    )  # fmt: skip
    p.add_argument("onnx", metavar="MODEL_ONNX", help="model.onnx written by `prunenas export` (model.json beside it)")
    p.add_argument("--dataset", default=None, help="cifar10, cifar100, digits, imagefolder (default: the model's)")
    p.add_argument("--data-dir", default=None, help="dataset folder or archive (default: $PRUNENAS_DATA, the cache)")
    p.add_argument(
        "--batch-size", type=int, default=256, metavar="N", help="images per ONNX Runtime call (default 256)"
    )
    p.add_argument(
        "--provider", default="auto", help="ONNX Runtime provider: auto (CUDA if usable), cpu, cuda (default auto)"
    )
    p.add_argument(
        "--runtime", choices=runtimes, default="onnxruntime",
        help="onnxruntime (--provider chooses CPU or CUDA), openvino (CPU) or tensorrt (GPU) (default onnxruntime)",
    )  # fmt: skip
    _json_flag(p, "print the result as JSON")
    p.set_defaults(handler=_handler("run_commands", "cmd_evaluate"))

    p = command(
        "completion", "print a shell completion script generated from these commands and flags",
        "prunenas completion bash > ~/.local/share/bash-completion/completions/prunenas",
        "prunenas completion bash >> ~/.bash_completion",
    )  # fmt: skip
    p.add_argument("shell", choices=["bash"], help="the shell (bash)")
    p.set_defaults(handler=lambda args: _print_completion(parser, args.shell))
    return parser


def _print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    from prunenas.cli.completion import bash_script

    print(bash_script(parser), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `prunenas` command (`argv`: its arguments; None: this process's command line, and the process
    ends when it returns). Ctrl-C or SIGTERM, once or many times: one line and exit 130 (`prunenas.interrupts`)."""

    raw = list(sys.argv[1:] if argv is None else argv)
    with interrupts.orderly_shutdown(process_ends=argv is None):
        try:
            return _run(raw)
        except KeyboardInterrupt:
            return _interrupted()
        except BaseException:
            if interrupts.received() is not None:  # what the signal broke on its way (a peer rank gone, ...)
                return _interrupted()
            raise


def _run(raw: list[str]) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(raw)
        args.raw_argv = raw
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        distributed.world()  # torchrun's environment, checked before any command starts its work
        return handler(args)
    except PrunenasError as exc:
        print(f"prunenas: error: {exc}", file=sys.stderr)
        if "--json" in raw:  # scripts read stdout: the error as JSON there too
            print(json.dumps({"error": str(exc), "exit_code": 2}))
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush quiet
        return 0


def _interrupted() -> int:
    """The one line of an interrupted command (only rank 0 of a torchrun group says it), exit code 130."""
    from prunenas import distributed, interrupts

    quiet = False
    with contextlib.suppress(Exception):
        quiet = not distributed.world().main
    if not quiet:
        with contextlib.suppress(Exception):
            print(f"prunenas: {interrupts.describe()}", file=sys.stderr, flush=True)
    return interrupts.EXIT_CODE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
