"""Bad input across the whole CLI: every case exits 2 with one line on stderr and no traceback."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from prunenas.cli import main
from prunenas.spaces import get_space


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def genotype_file(tmp: Path, genes: str, space: str = "resnet20_channels") -> str:
    """The space's reference genotype with `genes` (a JSON object) changed."""
    full = {**get_space(space).reference().genes, **json.loads(genes)}
    return str(write(tmp / "g.json", json.dumps({"space": space, "genes": full})))


def corrupt_tar(tmp: Path) -> str:
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w:gz") as tar:
        data = b"x" * 5000
        info = tarfile.TarInfo("cifar10/train/cat/0001.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path = tmp / "broken.tar.gz"
    path.write_bytes(good.getvalue()[:60])  # truncated
    return str(path)


def r20(tmp: Path) -> str:
    return "resnet20_channels"


# (case id, argv builder, a fragment the message must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("unknown space", lambda t: ["spaces", "show", "resnet999"], "unknown space"),
    ("unknown proposer", lambda t: ["propose", "--space", r20(t), "--proposer", "magic", "--ratio", "0.5"], "proposer"),
    ("unknown dataset", lambda t: ["train", r20(t), "--dataset", "imagenet22k", "--out", str(t / "r")], "dataset"),
    ("unknown recipe", lambda t: ["train", r20(t), "--recipe", "lightspeed"], "invalid choice"),
    ("unknown subcommand", lambda t: ["frobnicate"], "invalid choice"),
    ("malformed TOML", lambda t: ["spaces", "show", str(write(t / "bad.toml", "family = [unclosed"))], "TOML"),
    ("TOML of an unknown family", lambda t: ["spaces", "show", str(write(t / "f.toml", 'family = "mlp"'))], "family"),
    (
        "malformed JSON",
        lambda t: ["cost", str(write(t / "g.json", '{"space": "resnet20_channels", "genes": {'))],
        "JSON",
    ),
    ("JSON without genes", lambda t: ["cost", str(write(t / "g.json", '{"space": "resnet20_channels"}'))], "genes"),
    ("gene out of range", lambda t: ["cost", genotype_file(t, '{"stage1_width": 999}')], "out of range"),
    ("width of zero", lambda t: ["cost", genotype_file(t, '{"stage1_width": 0}')], "stage1_width"),
    (
        "unknown gene",
        lambda t: ["cost", str(write(t / "g.json", '{"space": "resnet20_channels", "genes": {"x": 3}}'))],
        "unknown gene",
    ),
    ("density of zero", lambda t: ["cost", genotype_file(t, '{"conv1": 0.0}', "resnet20_density")], "conv1"),
    ("missing genotype file", lambda t: ["cost", str(t / "nothing.json")], "does not exist"),
    ("genotype path is a folder", lambda t: ["cost", str(t)], "folder"),
    ("zero epochs", lambda t: ["train", r20(t), "--dataset", "digits", "--epochs", "0"], "epochs"),
    (
        "recipe setting of the wrong type",
        lambda t: ["train", r20(t), "--dataset", "digits", "--set", "milestones=2"],
        "milestones",
    ),
    (
        "unknown recipe setting",
        lambda t: ["train", r20(t), "--dataset", "digits", "--set", "warp=9"],
        "unknown setting",
    ),
    ("negative batch size", lambda t: ["train", r20(t), "--dataset", "digits", "--batch-size", "-4"], "--batch-size"),
    ("zero trials", lambda t: ["search", "--space", r20(t), "--dataset", "digits", "--trials", "0"], "--trials"),
    (
        "negative timeout",
        lambda t: ["search", "--space", r20(t), "--dataset", "digits", "--timeout", "-5"],
        "--timeout",
    ),
    ("zero workers", lambda t: ["search", "--space", r20(t), "--dataset", "digits", "--workers", "0"], "--workers"),
    (
        "impossible MACs budget",
        lambda t: ["search", "--space", r20(t), "--dataset", "digits", "--max-macs", "10", "--out", str(t / "s")],
        "smallest model",
    ),
    (
        "ratio out of range",
        lambda t: ["propose", "--space", r20(t), "--proposer", "uniform", "--ratio", "1.0"],
        "range",
    ),
    (
        "two targets",
        lambda t: ["propose", "--space", r20(t), "--proposer", "uniform", "--ratio", ".5", "--macs-ratio", ".5"],
        "one",
    ),
    (
        "missing data dir",
        lambda t: ["train", r20(t), "--dataset", "cifar10", "--data-dir", str(t / "nowhere")],
        "--data-dir",
    ),
    ("corrupt archive", lambda t: ["train", r20(t), "--dataset", "cifar10", "--data-dir", corrupt_tar(t)], "archive"),
    (
        "unreadable weights",
        lambda t: ["train", r20(t), "--dataset", "digits", "--weights", str(write(t / "w.pt", "no"))],
        "weights",
    ),
    (
        "wrong storage URL scheme",
        lambda t: [
            "search",
            "--space",
            r20(t),
            "--dataset",
            "digits",
            "--storage",
            "mongodb://x/y",
            "--out",
            str(t / "s"),
        ],
        "storage",
    ),
    (
        "unreachable storage",
        lambda t: [
            "search",
            "--space",
            r20(t),
            "--dataset",
            "digits",
            "--out",
            str(t / "s"),
            "--storage",
            "postgresql://u:secret@127.0.0.1:1/db",
        ],
        "reachable",
    ),
    ("export of a missing run", lambda t: ["export", str(t / "no-run")], "run"),
    ("evaluate a corrupt model", lambda t: ["evaluate", str(write(t / "m.onnx", "not onnx"))], "onnx"),
    (
        "pruner without a limit",
        lambda t: ["search", "--space", r20(t), "--dataset", "digits", "--pruner", "median"],
        "single",
    ),
    ("bad --gpus", lambda t: ["search", "--space", r20(t), "--dataset", "digits", "--gpus", "first"], "--gpus"),
    (
        "bad --option",
        lambda t: ["propose", "--space", r20(t), "--proposer", "uniform", "--ratio", ".5", "--option", "k"],
        "NAME=VALUE",
    ),
]


@pytest.mark.parametrize(("argv_for", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path, capsys, monkeypatch, argv_for, fragment):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNENAS_CACHE", str(tmp_path / "cache"))
    code = main(argv_for(tmp_path))
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prunenas: error:")
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "secret" not in lines[0]  # storage passwords are not echoed


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20
