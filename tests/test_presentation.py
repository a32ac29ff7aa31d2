"""What people read: progress in logs, --help, plots fit for a paper, `prunenas show`, the model card,
`prunenas export --opset`."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
import optuna
import pytest
import torch

import prunenas.export.exporter as export_mod
from prunenas.cli import build_parser, main
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.export import export_run
from prunenas.export.card import data_section
from prunenas.progress import BarProgress, LineProgress, make_progress, trial_line
from prunenas.recipes import make_recipe
from prunenas.report import (
    PLOT_FORMATS,
    pareto_figure,
    plot_pareto,
    plot_path,
    plot_profile,
    plot_training_curve,
    training_curve_figure,
)
from prunenas.rethink.plan import ArmPlan, Plan
from prunenas.rethink.report import arms_figure, plot_arms
from prunenas.rethink.run import ArmResult, RethinkOutcome, RunRecord
from prunenas.search import SearchConfig
from prunenas.search.storage import run_trials
from prunenas.spaces import get_space
from prunenas.train import EpochMetrics, RunSettings, train

MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "svg": (b"<svg", b"<?xml"), "pdf": (b"%PDF",)}
SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction)
COMMANDS = [
    ("spaces",), ("spaces", "show"), ("cost",), ("train",), ("pretrain",), ("proposers",), ("propose",), ("show",),
    ("search",), ("rethink",), ("export",), ("evaluate",),
]  # fmt: skip


def assert_format(path: Path, fmt: str) -> None:
    head = path.read_bytes()[:64].lstrip()
    assert head.startswith(MAGIC[fmt]), (path, head[:16])


@pytest.fixture
def no_progress_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRUNENAS_PROGRESS", raising=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, train_subset=96, val_size=32)


def _small_resnet20():
    space = get_space("resnet20_channels")
    genes = {g.name: 4 for g in space.genes}
    genes.update(stage1_width=8, stage2_width=8, stage3_width=8)
    return space, space.make(genes)


# -- 1. progress when stderr is not a terminal --------------------------------------------------------------
def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(no_progress_override: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    bar = make_progress(10, "demo", stream=tty)
    assert isinstance(bar, BarProgress)
    bar.update(3)
    bar.report("demo: epoch 1/2", {"loss": "1.000"})
    bar.close()
    assert "\r" in tty.getvalue()  # what a log must not get

    log = io.StringIO()
    lines = make_progress(10, "demo", stream=log)
    assert isinstance(lines, LineProgress)
    lines.update(5)
    lines.report("demo: epoch 1/2 loss 1.000")
    lines.note("demo: resuming")
    lines.close()
    assert log.getvalue() == "demo: epoch 1/2 loss 1.000\ndemo: resuming\n"
    assert make_progress(10, "demo", quiet=True, stream=log) is None


def test_progress_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNENAS_PROGRESS", "lines")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(3, "x", stream=Terminal()), LineProgress)


def test_training_progress_in_a_log_is_one_line_per_epoch(
    digits: Any, capsys: pytest.CaptureFixture[str], no_progress_override: None
) -> None:
    space, genotype = _small_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 2, "batch_size": 32})
    capsys.readouterr()
    train(space, genotype, digits, recipe, RunSettings(quiet=False, plot=False))
    err = capsys.readouterr().err  # capsys's stderr is not a TTY
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if " epoch " in ln]
    desc = f"resnet20_channels {genotype.key[:8]} proxy: "
    assert [ln.split(" loss ")[0] for ln in lines] == [desc + "epoch 1/2", desc + "epoch 2/2"]
    assert all(" acc " in ln and " val " in ln and ln.endswith(" img/s") for ln in lines)


def test_search_progress_in_a_log_is_one_line_per_trial(
    capsys: pytest.CaptureFixture[str], no_progress_override: None
) -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.5}, user_attrs={"origin": "proposer", "proposer": "l1", "target": {"value": 0.5}})

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("val_acc", x)
        trial.set_user_attr("macs_ratio", 0.25)
        return x

    config = SearchConfig(search={"budget": "smoke", "trials": 3})
    capsys.readouterr()
    run_trials(study, objective, config, poll_s=0.01)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("trial ")]
    assert [ln.split(":")[0] for ln in lines] == ["trial 1/3 done", "trial 2/3 done", "trial 3/3 done"]
    assert lines[0] == "trial 1/3 done: #0 l1@0.5, val_acc 0.500, MACs 0.250x"
    assert "sampled" in lines[1]


def test_trial_line_names_a_failed_trial() -> None:
    trial = SimpleNamespace(number=4, state=optuna.trial.TrialState.FAIL, user_attrs={})
    assert trial_line(2, 8, trial) == "trial #4 sampled fail (2/8 done)"


# -- 2. --help: examples and defaults -----------------------------------------------------------------------
def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_examples_and_states_every_default(path: tuple[str, ...]) -> None:
    parser = _subparser(path)
    text = parser.format_help()
    assert "\nexamples:\n" in text
    examples = text.split("\nexamples:\n", 1)[1].strip().splitlines()
    assert examples and all(e.strip().startswith("prunenas " + " ".join(path)) for e in examples), examples
    missing = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, SWITCHES):  # positionals; switches: off unless given
            continue
        if action.default is None or action.default is argparse.SUPPRESS:
            continue
        if "default" not in (action.help or ""):
            missing.append(action.option_strings[-1])
    assert not missing, f"`prunenas {' '.join(path)} --help` does not state the default of {missing}"


def test_cli_opset_default_is_the_exporters() -> None:
    args = build_parser().parse_args(["export", "RUN"])
    assert args.opset == export_mod.DEFAULT_OPSET
    assert f"{export_mod.MIN_OPSET} up to" in _subparser(("export",)).format_help()


# -- 3. plots fit for a paper ------------------------------------------------------------------------------
def _history(n: int) -> list[EpochMetrics]:
    return [
        EpochMetrics(epoch=e, epochs=n, train_loss=2.0 / e, train_acc=0.2 * e / n + 0.5, lr=0.1, seconds=1.0,
                     images_per_s=100.0, val_loss=2.1 / e, val_acc=0.2 * e / n + 0.45)
        for e in range(1, n + 1)
    ]  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    return [
        {"number": 0, "origin": "proposer", "proposer": "l1", "target": 0.5, "key": "aaaaaaaaaaaaaaaa",
         "macs": 20e6, "val_acc": 0.8},
        {"number": 1, "origin": "sampler", "proposer": None, "target": None, "key": "bbbbbbbbbbbbbbbb",
         "macs": 30e6, "val_acc": 0.85},
        {"number": 2, "origin": "sampler", "key": "cccccccccccccccc", "macs": 90e6, "val_acc": None,
         "infeasible": True},
    ]  # fmt: skip


def _outcome(seeds: int, tmp_path: Path) -> RethinkOutcome:
    space = get_space("resnet20_channels")
    genotype = space.reference().with_provenance(proposer="l1", target={"kind": "ratio", "value": 0.5})
    arms = []
    for i, name in enumerate(("unpruned", "finetune", "scratch-e", "scratch-b")):
        plan = ArmPlan(name=name, what=name, genotype=genotype, recipe=None, epochs=2, seeds=tuple(range(seeds)),
                       runs_of=name, macs=20_000_000, params=100_000, compute_macs=20_000_000)  # fmt: skip
        runs = tuple(
            RunRecord(seed=s, run_dir=str(tmp_path / f"{name}-{s}"), test_acc=0.9 - 0.01 * i + 0.003 * s,
                      val_acc=0.9, epochs_run=2, wall_time_s=1.0, stopped=None, trained=True)
            for s in range(seeds)
        )  # fmt: skip
        arms.append(ArmResult(plan, runs))
    plan = Plan(
        space=space.name, kind=space.kind, dataset="digits", budget="smoke", seeds=tuple(range(seeds)), base_epochs=2,
        finetune_epochs=1, genotype=genotype, decided_by="l1", reference=None, reference_macs=40_000_000,
        train_images=96, study_dir=tmp_path, arms=tuple(a.plan for a in arms),
    )  # fmt: skip
    return RethinkOutcome(plan=plan, arms=tuple(arms), files={}, trained=0, skipped=0, wall_time_s=0.0)


@pytest.mark.parametrize("fmt", PLOT_FORMATS)
def test_every_plot_writes_each_format(fmt: str, tmp_path: Path) -> None:
    space, genotype = _small_resnet20()
    written = [
        plot_training_curve(_history(3), tmp_path / f"curve.{fmt}"),
        plot_profile(space, genotype, tmp_path / "profile", fmt),  # no suffix: the format's is added
        plot_pareto(_rows(), tmp_path / f"pareto.{fmt}", front=[0, 1], reference={"macs": 40e6, "val_acc": 0.9}),
        plot_arms(_outcome(2, tmp_path), tmp_path / f"rethink.{fmt}"),
    ]
    assert [p.name for p in written] == [f"{n}.{fmt}" for n in ("curve", "profile", "pareto", "rethink")]
    for path in written:
        assert_format(path, fmt)


def test_plot_path_infers_refuses_and_defaults() -> None:
    assert plot_path("a/b.PDF") == (Path("a/b.PDF"), "pdf")
    assert plot_path("plot") == (Path("plot.png"), "png")
    assert plot_path("plot", "svg") == (Path("plot.svg"), "svg")
    for path, fmt in (("x.png", "pdf"), ("x.jpg", None), ("x.png", "gif")):
        with pytest.raises(PrunenasError):
            plot_path(path, fmt)


def test_training_curve_of_one_epoch_is_visible_with_integer_ticks() -> None:
    import matplotlib.pyplot as plt

    for n in (1, 3, 7):
        fig = training_curve_figure(_history(n))
        fig.canvas.draw()
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            if n == 1:
                assert all(line.get_marker() not in (None, "None", "") for line in ax.get_lines())
        plt.close(fig)


def test_pareto_names_seeded_points_and_marks_the_reference() -> None:
    import matplotlib.pyplot as plt

    fig = pareto_figure(_rows(), front=[0, 1], reference={"macs": 40e6, "val_acc": 0.9})
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "l1@0.5" in texts and "reference" in texts
    assert not any("aaaaaaaa" in t for t in texts)
    labels = ax.get_legend_handles_labels()[1]
    assert "reference (unpruned)" in labels
    plt.close(fig)
    fig = pareto_figure(_rows())  # `reference` stays optional
    assert "reference (unpruned)" not in fig.axes[0].get_legend_handles_labels()[1]
    plt.close(fig)


@pytest.mark.parametrize("seeds", [1, 3])
def test_rethink_plot_has_error_bars_only_with_several_seeds_and_no_truncated_bars(seeds: int, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer, ErrorbarContainer

    fig = arms_figure(_outcome(seeds, tmp_path))
    ax = fig.axes[0]
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == (0 if seeds == 1 else 4)
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert not bars or ax.get_ylim()[0] == 0  # bars that do not start at zero exaggerate differences
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert [t.split("\n")[0] for t in ticks] == ["Unpruned", "Fine-tuned", "Scratch-E", "Scratch-B"]
    assert f"n = {seeds}" in ticks[0]
    assert "l1@0.5" in ax.get_title()
    plt.close(fig)


# -- 4. prunenas show ----------------------------------------------------------------------------------------
def test_show_prints_cost_and_rounds_densities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space("resnet20_density")
    genotype = space.make({g.name: 0.123456 for g in space.genes})
    path = tmp_path / "g.json"
    genotype.save(path)
    cost = genotype_cost(space, genotype)
    capsys.readouterr()
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0.123456" not in out and " 0.123 " in out
    macs_row = next(ln for ln in out.splitlines() if ln.startswith("MACs"))
    params_row = next(ln for ln in out.splitlines() if ln.startswith("params"))
    from prunenas.report import human

    assert human(cost.macs) in macs_row and human(cost.reference_macs) in macs_row
    assert human(cost.params) in params_row and human(cost.reference_params) in params_row
    assert main(["show", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["macs"], data["params"]) == (cost.macs, cost.params)
    assert (data["reference_macs"], data["reference_params"]) == (cost.reference_macs, cost.reference_params)
    assert data["genes"]["conv1"] == pytest.approx(0.123456)  # JSON keeps the exact value


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_show_plot_format(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "li2017_resnet56_b", "--plot", str(tmp_path / "p"), "--plot-format", fmt]) == 0
    assert_format(tmp_path / f"p.{fmt}", fmt)
    assert main(["show", "li2017_resnet56_b", "--plot", str(tmp_path / f"q.{fmt}")]) == 0
    assert_format(tmp_path / f"q.{fmt}", fmt)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--plot", "x.png", "--plot-format", "pdf"], "ends in .png"),
        (["--plot-format", "svg"], "--plot-format needs --plot"),
        (["--plot", "x.jpg"], ".jpg"),
    ],
)
def test_show_plot_bad_input(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    assert main(["show", "li2017_resnet56_b", *[str(tmp_path / a) if a.startswith("x.") else a for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# -- 5. the model card and 6. --opset: a tiny trained run, exported ----------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits: Any) -> Path:
    space, genotype = _small_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1, "batch_size": 32})
    run = tmp_path_factory.mktemp("presentation") / "run"
    train(space, genotype, digits, recipe, RunSettings(quiet=True, plot=False), out_dir=run)
    genotype.save(run / "genotype.json")
    return run


def _legacy_only(real: Any) -> Any:
    def export(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dynamo", True):
            raise RuntimeError("simulated dynamo failure")
        return real(*args, **kwargs)

    return export


def _file_opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def test_cli_export_opset_dynamo_and_the_model_card(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "op20"
    assert main(["export", str(run_dir), "-o", str(out), "--opset", "20", "--json"]) == 0
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["export"]["method"] == "dynamo" and sidecar["opset"] == 20 == _file_opset(out / "model.onnx")
    card = (out / "README.md").read_text()
    assert "opset 20" in card
    assert "## Data" in card and "## Intended use" in card
    assert "8x8 scikit-learn digits" in card and "upscaled (bilinear) to 32x32, three equal channels" in card
    assert "CC BY 4.0" in card
    assert "not validated for deployment decisions" in card and "your own data" in card
    sizes = sidecar["dataset"]["sizes"]
    assert f"{sizes['train']:,} training / {sizes['val']:,} validation / {sizes['test']:,} test images" in card


def test_export_opset_legacy(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.onnx, "export", _legacy_only(torch.onnx.export))
    result = export_run(run_dir, tmp_path / "op13", opset=13)
    assert result.sidecar["export"]["method"] == "legacy" and result.sidecar["opset"] == 13
    assert _file_opset(result.onnx_path) == 13 and result.sidecar["parity"]["passed"]


def test_export_opset_below_dynamos_falls_back_to_legacy(run_dir: Path, tmp_path: Path) -> None:
    result = export_run(run_dir, tmp_path / "op14", opset=14)
    exp = result.sidecar["export"]
    assert exp["method"] == "legacy" and "not the requested 14" in exp["fallback_reason"]
    assert result.sidecar["opset"] == 14 == _file_opset(result.onnx_path)


@pytest.mark.parametrize("opset", ["12", "99", "x"])
def test_export_bad_opset_is_one_line_exit_2(
    opset: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["export", str(run_dir), "-o", str(tmp_path / "bad"), "--opset", opset]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--opset" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "bad").exists()


def _sidecar(name: str, source: str, shape: list[int]) -> dict[str, Any]:
    return {"dataset": {"name": name, "source": source, "sizes": {"train": 45000, "val": 5000, "test": 10000},
                        "image_shape": shape}}  # fmt: skip


def test_card_data_section_for_cifar_and_its_jpeg_copy() -> None:
    plain = "\n".join(data_section(_sidecar("cifar10", "/data/cifar-10-batches-py", [3, 32, 32])))
    assert "CIFAR-10" in plain and "32x32 RGB" in plain and "JPEG" not in plain
    assert "none stated by the authors" in plain and "cs.toronto.edu/~kriz/cifar.html" in plain
    assert "45,000 training / 5,000 validation / 10,000 test images" in plain
    jpeg = "\n".join(data_section(_sidecar("cifar10", "../shared/datasets/cifar10-jpeg.tar.gz", [3, 32, 32])))
    assert "JPEG quality 75" in jpeg and "CIFAR-10 (JPEG q75 copy)" in jpeg
    other = "\n".join(data_section(_sidecar("cifar100", "/x/my-cifar100-jpg.tar.gz", [3, 32, 32])))
    assert "JPEG quality not recorded" in other and "CIFAR-100" in other
    own = "\n".join(data_section(_sidecar("imagefolder", "/data/pets", [3, 64, 64])))
    assert "64x64" in own and "not recorded by prunenas" in own


def test_card_data_section_survives_a_sidecar_without_dataset_details() -> None:
    text = "\n".join(data_section({"dataset": {"name": "cifar10", "source": None, "sizes": None, "image_shape": None}}))
    assert "split sizes not recorded" in text and "CIFAR-10, 32x32 RGB." in text and "?" not in text
