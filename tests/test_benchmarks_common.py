"""benchmarks/common.py: the results pair's names and contents, the command line and the machine description
the benchmark scripts record (the scripts themselves are not run here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from prunenas.hardware import cpu_info

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_names_follow_the_committed_files(common: ModuleType) -> None:
    assert common.results_name("startup", date="2026-12-05") == "2026-12-05-cpu-startup"
    assert common.results_name("trainer", date="2026-12-05", tiny=True) == "2026-12-05-cpu-trainer-tiny"
    # the GPU suite's tag: <date>-<device>
    assert common.results_name("", kind=common.slug("NVIDIA H100 80GB HBM3"), date="2026-12-05") == (
        "2026-12-05-nvidia-h100-80gb-hbm3"
    )
    for name in ("2026-11-28-cpu-cli-latency", "2026-12-05-cpu-distillation", "2026-11-28-cpu-model-coverage"):
        assert (ROOT / "benchmarks" / "results" / f"{name}.md").exists()
        date, rest = name[:10], name[15:]
        assert common.results_name(rest, date=date) == name


def test_results_stem_from_out(common: ModuleType, tmp_path: Path) -> None:
    assert common.results_stem(tmp_path / "x", "startup") == tmp_path / "x"  # --out: a path without suffix
    stem = common.results_stem(tmp_path, "distillation", folder=True, date="2026-12-05")  # --out: a folder
    assert stem == tmp_path / "2026-12-05-cpu-distillation"
    default = common.results_stem(None, "latency-divisor")
    assert default.parent == ROOT / "benchmarks" / "results"
    assert default.name == f"{common.today()}-cpu-latency-divisor"


def test_write_results_writes_the_pair(common: ModuleType, tmp_path: Path) -> None:
    payload = {"date": common.stamp(), "machine": common.cpu_text(), "rows": [1.5, 2], "path": tmp_path}
    j, m = common.write_results(tmp_path / "sub" / "2026-12-05-cpu-x.v2", payload, "# title")
    assert (j.name, m.name) == ("2026-12-05-cpu-x.v2.json", "2026-12-05-cpu-x.v2.md")
    assert json.loads(j.read_text()) == {**payload, "path": str(tmp_path)}
    assert j.read_text().endswith("}\n") and m.read_text() == "# title\n"


def test_command_line_is_the_command_as_typed(common: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    script = ROOT / "benchmarks" / "startup.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--out", "a b", "--repeats", "1"])
    assert common.command_line(script) == "python benchmarks/startup.py --out 'a b' --repeats 1"
    assert common.command_line(script, ["--tiny"]) == "python benchmarks/startup.py --tiny"


def test_machine_is_detected(common: ModuleType) -> None:
    m = common.machine()
    info = cpu_info()
    assert m["cpu"]["model"] == info.model and m["cpu"]["amx"] == info.amx and m["cpu"]["bf16"] == info.bf16
    assert set(m) >= {"cpu", "cpu_count", "gpu", "torch", "cuda", "python", "platform", "memory_gb"}
    assert common.cpu_text().startswith(info.model)
    assert common.device_name("cpu") == info.model
