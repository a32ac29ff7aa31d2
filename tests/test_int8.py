"""INT8 and fp16: quantized exports measured against FP32, OpenVINO as a runtime (evaluate, parity, latency), and
the latency metric at a precision (a tiny search with --latency-precision int8). OpenVINO is a dev dependency:
these tests import it and never skip for its absence."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import openvino  # noqa: F401  (the dev extra installs it: a missing OpenVINO fails here, it is not skipped)
import pytest

import prunenas.export.precision as precision_mod
from prunenas import engines, latency, metrics
from prunenas.cli import build_parser, main
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.export import evaluate_onnx, export_run
from prunenas.export.precision import CALIBRATION_IMAGES, RUNTIMES
from prunenas.latency import genotype_latency
from prunenas.quantize import PRECISIONS, QuantizationError, quantize_int8
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.train import RunSettings, train

QUIET = RunSettings(quiet=True, plot=False, amp=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A narrow ResNet-20 trained for 5 epochs on the digits (~80% test accuracy: agreement then means something)."""
    space = get_space("resnet20_channels")
    genotype = space.make({**{g.name: 8 for g in space.genes}, "stage1_width": 8, "stage2_width": 12})
    data = load_dataset("digits", seed=0, val_size=64)
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 5, "batch_size": 32, "lr": 0.1})
    folder = tmp_path_factory.mktemp("int8") / "run"
    train(space, genotype, data, recipe, QUIET, out_dir=folder)
    genotype.save(folder / "genotype.json")
    return folder


@pytest.fixture(scope="module")
def int8_export(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8-export") / "ex"
    return export_run(run, out, precision="int8", calibration_images=48, latency_repeats=5)


def _quantize_linear_nodes(path: Path) -> int:
    return sum(1 for n in onnx.load(str(path)).graph.node if n.op_type == "QuantizeLinear")


def test_int8_export_measures_the_quantized_model_against_fp32(int8_export, run):
    out, sidecar = int8_export.out_dir, int8_export.sidecar
    entry = sidecar["precisions"]["int8"]
    assert (out / "model.int8.onnx").is_file() and entry["file"] == "model.int8.onnx"
    assert _quantize_linear_nodes(out / "model.int8.onnx") > 0 and _quantize_linear_nodes(out / "model.onnx") == 0
    assert entry["calibration"] == {"images": 48, "seed": 0, "split": "train"}
    assert entry["quantization"]["calibration_images"] == 48 and entry["quantization"]["quantized_nodes"] > 0
    # The figures come from running both models: evaluate (another code path) reproduces them.
    fp32 = evaluate_onnx(out / "model.onnx", provider="cpu")
    int8 = evaluate_onnx(out / "model.int8.onnx", provider="cpu")
    assert int8["precision"] == "int8" and fp32["precision"] == "fp32"
    assert entry["fp32_test_acc"] == pytest.approx(fp32["accuracy"])
    assert entry["test_acc"] == pytest.approx(int8["accuracy"])
    assert entry["drop_points"] == pytest.approx(100 * (fp32["accuracy"] - int8["accuracy"]))
    assert entry["test_images"] == fp32["images"] > 0
    assert fp32["accuracy"] > 0.5, "the fixture's model should be well above chance (10%)"
    # A quantized model is judged by agreement, not an elementwise tolerance; per-channel int8 of a small CNN keeps
    # nearly every prediction.
    assert entry["top1_agreement"] >= 0.9 and 0 < entry["max_abs_logit_diff"] < entry["max_abs_logit"]
    lat = entry["latency"]
    assert lat["fp32"]["1"]["median_ms"] > 0 and lat["int8"]["1"]["median_ms"] > 0
    assert lat["speedup"]["1"] == pytest.approx(lat["fp32"]["1"]["median_ms"] / lat["int8"]["1"]["median_ms"])
    card = (out / "README.md").read_text()
    assert "INT8 test accuracy" in card and "top-1 agreement" in card and "model.int8.onnx" in card
    assert json.loads((out / "model.json").read_text())["precisions"]["int8"]["test_acc"] == entry["test_acc"]


def test_a_failed_quantization_keeps_the_verified_fp32_export(run, tmp_path, monkeypatch, capfd):
    out = tmp_path / "ex"
    export_run(run, out)  # a good FP32 export first: it must survive the failed INT8 step untouched
    before = {name: (out / name).read_bytes() for name in ("model.onnx", "model.json", "README.md")}

    def refuse(*_args, **_kwargs):
        raise QuantizationError("ONNX Runtime's quantizer cannot handle this model (test)")

    monkeypatch.setattr(precision_mod, "quantize_int8", refuse)
    code = main(["export", str(run), "-o", str(out), "--precision", "int8", "--repeats", "2"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot handle" in err and "FP32 export" in err and "kept" in err
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    sidecar = json.loads((out / "model.json").read_text())
    assert "precisions" not in sidecar and (out / "model.onnx").read_bytes() == before["model.onnx"]
    assert not list(out.parent.glob(".ex.staging-*"))


def test_a_new_fp32_export_removes_the_old_quantized_copy(int8_export, run, tmp_path):
    out = tmp_path / "ex"
    export_run(run, out, precision="int8", calibration_images=8, latency_repeats=2)
    assert (out / "model.int8.onnx").is_file()
    export_run(run, out)
    assert not (out / "model.int8.onnx").exists() and "precisions" not in json.loads((out / "model.json").read_text())


def test_openvino_runs_the_export_with_parity_and_the_same_accuracy(run, int8_export, tmp_path):
    result = export_run(run, tmp_path / "ov", runtime="openvino", precision="int8", calibration_images=32,
                        latency_repeats=3)  # fmt: skip
    parity = result.sidecar["parity"]
    assert parity["openvino"]["passed"] and parity["openvino"]["provider"].startswith("OpenVINO")
    assert parity["openvino"]["max_abs_diff"] < parity["openvino"]["checks"][0]["allowed"] + 1
    assert {c["input"] for c in parity["openvino"]["checks"]} == {c["input"] for c in parity["checks"]}
    entry = result.sidecar["precisions"]["int8"]
    assert entry["runtime"].startswith("OpenVINO") and entry["top1_agreement"] >= 0.9
    ort_fp32 = evaluate_onnx(result.onnx_path, provider="cpu")
    ov_fp32 = evaluate_onnx(result.onnx_path, runtime="openvino")
    assert ov_fp32["provider"].startswith("OpenVINO") and ov_fp32["runtime"] == "OpenVINO"
    assert abs(ov_fp32["correct"] - ort_fp32["correct"]) <= 1  # fp32 in both: at most a near-tie flips
    ov_int8 = evaluate_onnx(result.out_dir / "model.int8.onnx", runtime="openvino")
    assert ov_int8["precision"] == "int8" and ov_int8["accuracy"] == pytest.approx(entry["test_acc"])


def test_python_api_exports_int8(run, tmp_path):
    import prunenas as pn

    result = pn.export_onnx(run, tmp_path / "api", precision="int8", calibration_images=16, latency_repeats=2)
    assert result.sidecar["precisions"]["int8"]["calibration"]["images"] == 16
    with pytest.raises(PrunenasError, match="calibration_images"):
        pn.export_onnx(run, tmp_path / "api2", precision="int8", calibration_images=0)


def test_cli_evaluate_runtime_openvino(int8_export, capfd):
    assert main(["evaluate", str(int8_export.out_dir / "model.int8.onnx"), "--runtime", "openvino"]) == 0
    out = capfd.readouterr().out
    assert "OpenVINO" in out and "int8" in out and "test accuracy" in out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--calibration-images", "0"], "--calibration-images"),
        (["--precision", "fp16"], "--precision fp16 does not run on --runtime onnxruntime --provider cpu"),
        (["--runtime", "tensorrt"], "--runtime tensorrt"),
        (["--threads", "0"], "--threads"),
        (["--engine", "tensorrt"], "--engine tensorrt"),
    ],
)
def test_export_bad_input_is_one_line_and_nothing_is_written(run, tmp_path, capfd, extra, fragment):
    out = tmp_path / "never"
    code = main(["export", str(run), "-o", str(out), "--provider", "cpu", "--precision", "int8", *extra])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and fragment in err, err
    assert not out.exists()


def test_openvino_not_installed_is_one_line(run, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(engines, "openvino_version", lambda: None)
    code = main(["export", str(run), "-o", str(tmp_path / "x"), "--runtime", "openvino"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "OpenVINO is not installed" in err and "prunenas[openvino]" in err
    code = main(["search", "--space", "resnet20_channels", "--dataset", "digits", "--objectives", "val_acc,latency",
                 "--latency-provider", "openvino", "--out", str(tmp_path / "s")])  # fmt: skip
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--latency-provider openvino" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--latency-precision", "int4"], "--latency-precision"),
        (["--latency-provider", "torch", "--latency-precision", "int8"], "ONNX engine"),
        (["--latency-provider", "cpu", "--latency-precision", "fp16"], "--latency-precision fp16 does not run"),
    ],
)
def test_latency_precision_bad_input(tmp_path, capfd, extra, fragment):
    code = main(["search", "--space", "resnet20_channels", "--dataset", "digits", "--objectives", "val_acc,latency",
                 "--out", str(tmp_path / "s"), *extra])  # fmt: skip
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and fragment in err, err


def test_quantizer_refuses_what_it_cannot_handle():
    with pytest.raises(PrunenasError, match="calibration"):
        quantize_int8(b"", [])
    two_inputs = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Add", ["a", "b"], ["c"])], "g",
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3]) for n in ("a", "b")],
            [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1, 3])],
        )
    )  # fmt: skip
    with pytest.raises(QuantizationError, match="one image input"):
        quantize_int8(two_inputs.SerializeToString(), [np.zeros((1, 3), np.float32)])


def test_int8_latency_is_its_own_measurement_per_runtime(tmp_path, monkeypatch, tiny_toml):
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path))
    space = get_space(str(tiny_toml))
    genotype = space.reference()
    results = {
        (provider, precision): genotype_latency(space, genotype, 10, provider=provider, precision=precision, threads=1)
        for provider in ("cpu", "openvino")
        for precision in ("fp32", "int8")
    }
    assert all(r.precision == p and r.provider == prov and r.ms > 0 for (prov, p), r in results.items())
    files = list((tmp_path / "latency").glob("*.json"))
    assert len(files) == 4  # one cache entry per runtime and precision, none shared
    assert genotype_latency(space, genotype, 10, provider="cpu", precision="int8", threads=1) == results["cpu", "int8"]


def test_tiny_search_prices_int8_latency(tmp_path, monkeypatch, tiny_toml):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path / "costs"))
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "64", "--budget", "smoke",
            "--trials", "2", "--proxy-epochs", "1", "--no-final", "--objectives", "val_acc,latency",
            "--latency-precision", "int8", "--latency-threads", "1", "--out", "s", "-q"]  # fmt: skip
    assert main(argv) == 0
    measured = [json.loads(p.read_text()) for p in (tmp_path / "costs" / "latency").glob("*.json")]
    assert measured and all(m["precision"] == "int8" for m in measured)  # the flag reached the measurement
    with open("s/trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["latency"]) > 0 for r in rows)
    assert all(r["latency_setup"].startswith("ONNX Runtime cpu int8, batch 1, 1 threads, ") for r in rows)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert "int8" in summary["objectives"][1]["setup"]


def test_search_resumed_at_another_precision_is_refused(tmp_path, monkeypatch, capfd, tiny_toml):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path / "costs"))
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "64", "--budget", "smoke",
            "--trials", "1", "--proxy-epochs", "1", "--no-final", "--objectives", "val_acc,latency",
            "--latency-threads", "1", "--out", "s", "-q"]  # fmt: skip
    assert main([*argv, "--latency-precision", "int8"]) == 0
    capfd.readouterr()
    assert main([*argv, "--latency-precision", "fp32"]) == 2  # int8 and fp32 latencies are never mixed in one study
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "precision" in err, err


def test_constants_the_cli_repeats_match_the_code():
    """The CLI and the metric options spell these out (importing them would load torch for --help)."""
    parser = build_parser()
    args = parser.parse_args(["export", "RUN"])
    assert (args.calibration_images, args.precision, args.runtime) == (CALIBRATION_IMAGES, "fp32", RUNTIMES[0])
    for precision in PRECISIONS:
        assert parser.parse_args(["export", "RUN", "--precision", precision]).precision == precision
    for runtime in RUNTIMES:
        assert parser.parse_args(["export", "RUN", "--runtime", runtime]).runtime == runtime
        assert parser.parse_args(["evaluate", "M", "--runtime", runtime]).runtime == runtime
    assert tuple(metrics.PROVIDERS) == tuple(latency.PROVIDERS) and tuple(metrics.PRECISIONS) == PRECISIONS
    assert set(engines.SUPPORTED) == set(engines.PROVIDERS) and set(engines.PROVIDERS) < set(latency.PROVIDERS)


def test_fp16_export_on_openvino(run, tmp_path):
    result = export_run(run, tmp_path / "fp16", precision="fp16", runtime="openvino", latency_repeats=2)
    entry = result.sidecar["precisions"]["fp16"]
    assert (result.out_dir / "model.fp16.onnx").is_file() and entry["precision"] == "fp16"
    half = onnx.load(str(result.out_dir / "model.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 in and out
    assert entry["top1_agreement"] >= 0.95 and entry["max_abs_logit_diff"] < 0.5
    assert evaluate_onnx(result.out_dir / "model.fp16.onnx", runtime="openvino")["precision"] == "fp16"
