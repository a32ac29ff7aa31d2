"""ONNX export, parity, latency and evaluate, on tiny models trained for seconds on the embedded digits set."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import prunenas.export.exporter as export_mod  # export_run looks up _export_onnx (from writer) and _destination here
from prunenas.cli import main
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.export import (
    ExportError,
    ExportResult,
    check_parity,
    evaluate_onnx,
    export_run,
    load_run,
    normalize_images,
    onnx_latency,
)
from prunenas.genotype import Genotype
from prunenas.masks import masked_layers
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.train import CHECKPOINT, METRICS, RunSettings, train

# fp32 whatever the CPU (bf16 is the default on AMX CPUs): the trained models these tests export and compare
# are the same on every machine
QUIET = RunSettings(quiet=True, plot=False, amp=False)
FAMILIES = ("resnet_a", "resnet_b", "vgg", "density", "stages")
B_SPACE_TOML = """
extends = "resnet20_channels"
description = "ResNet-20 with option-B (1x1 conv + BN) shortcuts, for the export tests"
[model]
shortcut = "B"
"""
STAGES_TOML = """
extends = "resnet56_stages"
description = "the resnet56_stages family (cifar_resnet_stages) at depth 14, for the export tests"
[model]
depth = 14
widths = [8, 12, 16]
"""
DENSITY_TOML = """
family = "density"
description = "a narrow ResNet-20 (shortcut B) with one density per conv/linear layer, for the export tests"
[model]
base = "resnet20_channels"
base_overrides = { shortcut = "B", widths = [8, 12, 16] }
"""


def _genotype(family: str):
    if family in ("resnet_a", "resnet_b"):
        space = get_space("resnet20_channels" if family == "resnet_a" else "export_test_resnet20_b")
        genes = {g.name: 4 for g in space.genes}
        # 8 -> 12 zero-pads the option-A shortcut, 12 -> 6 truncates it: both code paths of ShortcutA.
        genes.update(stage1_width=8, stage2_width=12, stage3_width=6)
        return space, space.make(genes)
    if family == "vgg":
        space = get_space("vgg16_channels")
        return space, space.make({g.name: 8 for g in space.genes})
    if family == "density":
        space = get_space("export_test_density")
        assert space.family == get_space("resnet20_density").family == "density"
        return space, space.make({g.name: 0.3 for g in space.genes})
    space = get_space("export_test_stages14")
    assert space.family == get_space("resnet56_stages").family == "cifar_resnet_stages"
    return space, space.make({"stage1_ratio": 0.5, "stage2_ratio": 0.25, "stage3_ratio": 0.75})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A module-wide folder, with the test spaces (option B, narrow density, depth-14 stages) on the spaces path."""
    root = tmp_path_factory.mktemp("export")
    spaces = root / "spaces"
    spaces.mkdir()
    (spaces / "export_test_resnet20_b.toml").write_text(B_SPACE_TOML)
    (spaces / "export_test_stages14.toml").write_text(STAGES_TOML)
    (spaces / "export_test_density.toml").write_text(DENSITY_TOML)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNENAS_SPACES_PATH", str(spaces))
        mp.delenv("PRUNENAS_DATA", raising=False)
        yield root


@pytest.fixture(scope="module")
def runs(workdir):
    """One trained run folder per space family (1 epoch; resnet_a 2)."""
    small = load_dataset("digits", seed=0, train_subset=128, val_size=32)
    larger = load_dataset("digits", seed=0, train_subset=256, val_size=32)
    out: dict[str, Path] = {}
    for family in FAMILIES:
        space, genotype = _genotype(family)
        epochs, data = (2, larger) if family == "resnet_a" else (1, small)
        recipe = make_recipe("proxy", space.recipe, overrides={"epochs": epochs, "batch_size": 32})
        run = workdir / "runs" / family
        train(space, genotype, data, recipe, QUIET, out_dir=run)
        genotype.save(run / "genotype.json")  # as `prunenas train` does
        out[family] = run
    return out


@pytest.fixture(scope="module")
def exported(runs, workdir, cli_export):
    """Every family's export; resnet_a's is the one made through the CLI (default layout, --benchmark)."""
    out = {
        family: export_run(runs[family], workdir / "exports" / family) for family in FAMILIES if family != "resnet_a"
    }
    folder = cli_export[0] / cli_export[1]["out"]
    out["resnet_a"] = ExportResult(folder, folder / "model.onnx", json.loads((folder / "model.json").read_text()))
    return out


@pytest.fixture(scope="module")
def cli_export(runs, workdir):
    """`prunenas export RUN --benchmark --json` from a working folder: the default exports/ layout."""
    cwd = workdir / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(
                ["export", str(runs["resnet_a"]), "--benchmark", "--repeats", "3", "--batch-sizes", "1", "4", "--json"]
            )
    assert code == 0
    return cwd, json.loads(buf.getvalue())


@functools.cache
def _digits_test() -> tuple[np.ndarray, torch.Tensor]:
    data = load_dataset("digits", seed=0)
    return data.test.x.numpy(), data.test.y


# -- export of every space family -----------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_export_passes_checker_and_parity(family, exported, runs):
    result = exported[family]
    files = sorted(p.name for p in result.out_dir.iterdir())
    assert files == ["README.md", "model.json", "model.onnx"]  # one self-contained file, no .data
    assert not [p for p in result.out_dir.parent.iterdir() if "staging" in p.name]
    model = onnx.load(str(result.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    s = json.loads((result.out_dir / "model.json").read_text())
    assert s["export"]["method"] == "dynamo" and s["export"]["fallback_reason"] is None
    assert isinstance(s["opset"], int) and s["opset"] >= 17
    labels = [c["input"] for c in s["parity"]["checks"]]
    assert labels == ["random batch 1", "random batch 7", "digits test images"]
    assert all(c["max_abs_diff"] < 1e-4 for c in s["parity"]["checks"])
    assert s["parity"]["provider"] == "CPUExecutionProvider"  # no GPU here: CPU only, chosen explicitly
    assert s["space"] == load_run(runs[family]).space.name


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_batch_axis_in_onnxruntime(family, exported, runs):
    run = load_run(runs[family])
    session = ort.InferenceSession(str(exported[family].onnx_path), providers=["CPUExecutionProvider"])
    images = _digits_test()[0][:8]
    for batch in (1, 7):
        x = normalize_images(torch.from_numpy(images[:batch]), run.mean, run.std)
        got = session.run(None, {"input": x})[0]
        with torch.no_grad():
            expected = run.model(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_sidecar_holds_the_run(exported, runs):
    s = exported["resnet_a"].sidecar
    assert s == json.loads((exported["resnet_a"].out_dir / "model.json").read_text())
    genotype = Genotype.load(runs["resnet_a"] / "genotype.json")
    metrics = json.loads((runs["resnet_a"] / METRICS).read_text())
    space = get_space("resnet20_channels")
    cost = genotype_cost(space, genotype, num_classes=10)
    assert s["genotype"] == genotype.to_dict() and s["key"] == genotype.key and s["space"] == "resnet20_channels"
    assert (s["macs"], s["params"]) == (cost.macs, cost.params)
    assert s["accuracy"]["val_acc"] == metrics["val_acc"] and s["accuracy"]["test_acc"] == metrics["test_acc"]
    assert s["accuracy"]["test_acc_precision"] == "fp32"
    assert s["recipe"] == metrics["recipe_settings"] and s["seed"] == 0
    assert s["input"]["name"] == "input" and s["input"]["shape"] == ["batch", 3, 32, 32]
    assert s["input"]["dtype"] == "float32" and s["input"]["mean"] == metrics["dataset"]["mean"]
    assert s["input"]["std"] == metrics["dataset"]["std"] and "/ 255 - mean) / std" in s["input"]["normalization"]
    assert s["classes"] == [str(i) for i in range(10)] and s["dataset"]["name"] == "digits"
    assert set(s["versions"]) >= {"torch", "onnx", "onnxruntime", "prunenas"}
    assert s["sparsity"] is None and exported["vgg"].sidecar["latency"] is None
    assert "prunenas evaluate model.onnx" in (exported["resnet_a"].out_dir / "README.md").read_text()
    props = {p.key: p.value for p in onnx.load(str(exported["resnet_a"].onnx_path)).metadata_props}
    assert props["prunenas.key"] == genotype.key and json.loads(props["prunenas.std"]) == s["input"]["std"]


def test_density_export_carries_the_zeros(exported, runs):
    state = torch.load(runs["density"] / CHECKPOINT, weights_only=False)["model"]
    model = onnx.load(str(exported["density"].onnx_path))
    names = [i.name for i in model.graph.initializer] + [i.name for i in model.graph.input]
    assert not [n for n in names if "mask" in n]  # folded into the weights, not exported as tensors
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    s = exported["density"].sidecar
    layers = s["sparsity"]["layers"]
    run = load_run(runs["density"])
    masked = list(masked_layers(run.model))
    assert len(masked) == len(layers) == len(run.space.genes)
    for name, _module, mask in masked:
        w = weights[f"{name}.weight"]  # BN may be folded into it: per-channel scaling keeps the zeros
        assert np.all(w[mask.numpy() == 0] == 0), name
        zeros = int((mask == 0).sum())
        assert layers[name]["zeros"] == zeros and layers[name]["zeros_in_onnx"] >= zeros
        assert layers[name]["genotype_density"] == pytest.approx(0.3)
    total = sum(int(v.numel()) for k, v in state.items() if k.endswith("weight_mask"))
    assert s["sparsity"]["overall"]["weights"] == total
    assert s["sparsity"]["overall"]["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert "no speed-up" in s["sparsity"]["note"]
    assert s["export"]["masks_folded"] is True


# -- CLI: export layout, benchmark, evaluate --------------------------------------------------------
def test_cli_export_default_layout_and_benchmark(cli_export, runs):
    cwd, printed = cli_export
    key = Genotype.load(runs["resnet_a"] / "genotype.json").key
    folder = cwd / "exports" / "resnet20_channels" / key
    assert Path(printed["out"]) == Path("exports") / "resnet20_channels" / key
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.json", "model.onnx"]
    lat = json.loads((folder / "model.json").read_text())["latency"]
    assert lat == printed["latency"] and lat["provider"] == "CPUExecutionProvider"
    assert set(lat["per_batch"]) == {"1", "4"} and lat["repeats"] == 3
    for v in lat["per_batch"].values():
        assert 0 < v["median_ms"] <= v["p90_ms"]


def test_cli_evaluate_matches_torch_accuracy(cli_export, capfd):
    cwd, printed = cli_export
    onnx_path = cwd / printed["out"] / "model.onnx"
    assert main(["evaluate", str(onnx_path), "--dataset", "digits", "--json"]) == 0
    r = json.loads(capfd.readouterr().out)
    assert r["images"] == 359 and r["provider"] == "CPUExecutionProvider"
    # the model does not predict one class for everything, so equal accuracies are not trivial
    run = load_run(cli_export[0].parent / "runs" / "resnet_a")
    images, _ = _digits_test()
    with torch.no_grad():
        preds = run.model(torch.from_numpy(normalize_images(torch.from_numpy(images), run.mean, run.std))).argmax(1)
    assert len(preds.unique()) >= 3
    assert abs(r["accuracy"] - printed["accuracy"]["test_acc"]) <= 0.001
    assert main(["evaluate", str(onnx_path)]) == 0  # dataset defaults to the model's own
    assert "PyTorch test accuracy (metrics.json, fp32)" in capfd.readouterr().out


def test_evaluate_density_matches_torch_accuracy(exported):
    r = evaluate_onnx(exported["density"].onnx_path, "digits")
    assert abs(r["accuracy"] - exported["density"].sidecar["accuracy"]["test_acc"]) <= 0.001


def test_onnx_latency_is_importable_and_typed(exported):
    lat = onnx_latency(exported["vgg"].onnx_path, batch_sizes=(1, 3), repeats=3, warmup=1, threads=1)
    assert lat["provider"] == "CPUExecutionProvider" and lat["intra_op_threads"] == 1
    assert set(lat["per_batch"]) == {"1", "3"}
    assert all(v["images_per_s"] > 0 for v in lat["per_batch"].values())
    with pytest.raises(PrunenasError, match="repeats"):
        onnx_latency(exported["vgg"].onnx_path, repeats=0)


# -- the checks can fail ----------------------------------------------------------------------------
def test_parity_check_detects_a_different_model(exported, runs):
    other = load_run(runs["resnet_b"]).model  # same input and output shapes, other weights
    inputs = [("random batch 2", np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))]
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        check_parity(other, exported["resnet_a"].onnx_path, inputs)
    same = load_run(runs["resnet_a"]).model
    assert check_parity(same, exported["resnet_a"].onnx_path, inputs)["passed"]


def test_failed_parity_keeps_nothing_and_exits_1(runs, workdir, monkeypatch, capfd):
    real_export = export_mod._export_onnx

    def perturbed(model, path, input_shape):
        bad = load_run(runs["resnet_a"]).model
        with torch.no_grad():
            bad.fc.bias.add_(1e-2)  # a small but real difference
        return real_export(bad, path, input_shape)

    monkeypatch.setattr(export_mod, "_export_onnx", perturbed)
    monkeypatch.setattr(torch.onnx, "export", _legacy_only(torch.onnx.export))  # fast
    dest = workdir / "failing" / "new"
    assert main(["export", str(runs["resnet_a"]), "-o", str(dest)]) == 1
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prunenas: error:")]
    assert len(errors) == 1 and "disagrees with PyTorch" in errors[0] and "Traceback" not in err
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    # a previous export in the folder survives a failed re-export untouched
    old = workdir / "failing" / "old"
    old.mkdir()
    (old / "model.onnx").write_bytes(b"previous")
    assert main(["export", str(runs["resnet_a"]), "-o", str(old)]) == 1
    assert (old / "model.onnx").read_bytes() == b"previous" and sorted(p.name for p in old.iterdir()) == ["model.onnx"]


def _legacy_only(real):
    def export(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("simulated dynamo failure\nsecond line")
        return real(*args, **kwargs)

    return export


def test_legacy_fallback_when_dynamo_fails(runs, workdir, monkeypatch, caplog):
    monkeypatch.setattr(torch.onnx, "export", _legacy_only(torch.onnx.export))
    with caplog.at_level("WARNING", logger="prunenas.export"):
        result = export_run(runs["resnet_a"], workdir / "legacy")
    assert "simulated dynamo failure" in caplog.text
    exp = result.sidecar["export"]
    assert exp["method"] == "legacy" and exp["fallback_reason"] == "RuntimeError: simulated dynamo failure"
    assert result.sidecar["parity"]["passed"] and [c["batch"] for c in result.sidecar["parity"]["checks"]] == [
        1,
        7,
        256,
    ]
    onnx.checker.check_model(onnx.load(str(result.onnx_path)), full_check=True)
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["README.md", "model.json", "model.onnx"]


# -- bad input through the CLI: exit 2, one line, no traceback --------------------------------------
def _bad_case(case: str, runs: dict[str, Path], exported, tmp: Path) -> list[str]:
    run = runs["resnet_a"]
    onnx_path = exported["resnet_a"].onnx_path
    if case == "missing run dir":
        return ["export", str(tmp / "nope")]
    if case == "run dir without checkpoint":
        (tmp / "run").mkdir()
        shutil.copy(run / "genotype.json", tmp / "run" / "genotype.json")
        return ["export", str(tmp / "run")]
    if case in ("genotype.json of another genotype", "weights that do not fit genotype.json"):
        shutil.copytree(run, tmp / "run")
        space, _ = _genotype("resnet_a")
        space.make({g.name: 5 for g in space.genes}).save(tmp / "run" / "genotype.json")
        if case == "weights that do not fit genotype.json":  # a checkpoint that does not name its genotype
            state = torch.load(tmp / "run" / CHECKPOINT, weights_only=False)
            del state["genotype"]
            torch.save(state, tmp / "run" / CHECKPOINT)
        return ["export", str(tmp / "run")]
    if case == "output folder below a file":
        (tmp / "file").write_text("x")
        return ["export", str(run), "-o", str(tmp / "file" / "sub")]
    if case == "unknown dataset for the parity check":
        return ["export", str(run), "-o", str(tmp / "out"), "--dataset", "mnist"]
    if case == "missing onnx":
        return ["evaluate", str(tmp / "missing.onnx")]
    if case == "onnx without sidecar":
        shutil.copy(onnx_path, tmp / "model.onnx")
        return ["evaluate", str(tmp / "model.onnx")]
    if case == "corrupt onnx":
        (tmp / "model.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
        shutil.copy(onnx_path.with_name("model.json"), tmp / "model.json")
        return ["evaluate", str(tmp / "model.onnx")]
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing run dir", "does not exist"),
        ("run dir without checkpoint", "has no checkpoint.pt"),
        ("genotype.json of another genotype", "is not the genotype checkpoint.pt was trained on"),
        ("weights that do not fit genotype.json", "does not fit genotype"),
        ("output folder below a file", "which is a file"),
        ("unknown dataset for the parity check", "unknown dataset 'mnist'"),
        ("missing onnx", "does not exist"),
        ("onnx without sidecar", "no sidecar model.json"),
        ("corrupt onnx", "not a valid ONNX model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, message, runs, exported, tmp_path, capfd):
    argv = _bad_case(case, runs, exported, tmp_path)
    capfd.readouterr()
    assert main(argv) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("prunenas: error:") and message in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()


def test_default_name_is_the_key_unless_another_run_holds_it(runs, tmp_path):
    run = load_run(runs["vgg"])
    root = tmp_path / "exports"
    by_key = root / "vgg16_channels" / run.genotype.key
    assert export_mod._destination(run, None, None, root) == by_key
    by_key.mkdir(parents=True)
    (by_key / "model.json").write_text(json.dumps({"source": {"run_dir": str(run.run_dir.resolve())}}))
    assert export_mod._destination(run, None, None, root) == by_key  # the same run: re-export in place
    (by_key / "model.json").write_text(json.dumps({"source": {"run_dir": "/another/run"}}))
    assert export_mod._destination(run, None, None, root) == root / "vgg16_channels" / "vgg"
    assert export_mod._destination(run, None, "mine", root) == root / "vgg16_channels" / "mine"
    assert export_mod._destination(run, tmp_path / "x", "mine", root) == tmp_path / "x"
    with pytest.raises(PrunenasError, match="plain folder name"):
        export_mod._destination(run, None, "../up", root)
