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


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


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


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def one_class_tree(tmp: Path) -> str:
    """An ImageFolder tree (train/ and test/) with a single class."""
    from PIL import Image

    for split in ("train", "test"):
        for i in range(4):
            path = tmp / "one" / split / "cat" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
    return str(tmp / "one")


def study_with_journal(tmp: Path, content: bytes | None, folder: bool = False) -> str:
    out = tmp / "s"
    out.mkdir(parents=True, exist_ok=True)
    if folder:
        (out / "study.journal").mkdir()
    elif content is not None:
        (out / "study.journal").write_bytes(content)
    return str(out)


def truncated_checkpoint(tmp: Path) -> str:
    import torch

    from prunenas.spaces import get_space

    path = tmp / "ref.pt"
    torch.save({"model": get_space("resnet20_channels").build().state_dict()}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return str(path)


def toml(tmp: Path, text: str | bytes, name: str = "s.toml") -> str:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def search(t: Path, *extra: str) -> list[str]:
    return ["search", "--space", r20(t), "--dataset", "digits", "--train-subset", "32", *extra]


def train(t: Path, *extra: str) -> list[str]:
    return ["train", r20(t), "--dataset", "digits", "--train-subset", "32", "--epochs", "1", *extra]


_JOURNAL_LINE = b'{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n'


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
    # a density of 0 is valid (an emptied layer); below 0 is not
    ("negative density", lambda t: ["cost", genotype_file(t, '{"conv1": -0.1}', "resnet20_density")], "conv1"),
    ("missing genotype file", lambda t: ["cost", str(t / "nothing.json")], "does not exist"),
    ("genotype path is a folder", lambda t: ["cost", str(t)], "folder"),
    # a file of another kind where a genotype or a run folder is wanted: say what it is, not how it failed to parse
    ("an ONNX model as the genotype", lambda t: ["cost", str(write(t / "m.onnx", "\x08\x07onnx"))], "ONNX model"),
    ("a binary file as the genotype", lambda t: ["cost", str(write_bytes(t / "g.bin", b"\xff\xfe\x00"))], "binary"),
    (
        "a run folder as the genotype",
        lambda t: ["cost", str(write(t / "run" / "genotype.json", "{}").parent)],
        "genotype.json",
    ),
    # flags of `propose` that cannot apply are refused, not dropped
    (
        "data flags with a proposer that uses no data",
        lambda t: ["propose", "--space", r20(t), "--proposer", "uniform", "--ratio", ".5", "--data-dir", str(t)],
        "--data-dir does not apply",
    ),
    (
        "--pretrain-epochs with --reference",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "l1",
            "--ratio",
            ".5",
            "--reference",
            str(t / "x.pt"),
            "--pretrain-epochs",
            "1",
        ],
        "--pretrain-epochs 1 trains a reference only",
    ),
    (
        "--pretrain-epochs with a proposer that scores no trained weights",
        lambda t: ["propose", "--space", r20(t), "--proposer", "uniform", "--ratio", ".5", "--pretrain-epochs", "2"],
        "does not apply",
    ),
    ("a genotype as the run to export", lambda t: ["export", genotype_file(t, "{}")], "prunenas train"),
    ("a checkpoint as the run to export", lambda t: ["export", str(write(t / "r" / "checkpoint.pt", "x"))], "folder"),
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
    # -- output paths: every output is created in one place and refused in one line naming its flag
    ("--out is a file", lambda t: search(t, "--out", str(write(t / "f", "x"))), "--out"),
    ("train --out below a file", lambda t: train(t, "--out", str(write(t / "f", "x") / "run")), "--out"),
    (
        "propose -o below a file",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "uniform",
            "--ratio",
            ".5",
            "-o",
            str(write(t / "f", "x") / "g.json"),
        ],
        "-o",
    ),
    ("--exports is a file", lambda t: search(t, "--exports", str(write(t / "e", "x"))), "--exports"),
    ("show --plot names a folder", lambda t: ["show", r20(t), "--plot", str(folder(t / "plot.png"))], "--plot"),
    ("show --plot below a file", lambda t: ["show", r20(t), "--plot", str(write(t / "f", "x") / "p.png")], "--plot"),
    ("study name too long", lambda t: search(t, "--study", "s" * 300), "--study"),
    ("study name escapes the folder", lambda t: search(t, "--study", "a/../../b"), "--study"),
    ("out name too long", lambda t: train(t, "--out", str(t / ("r" * 300))), "too long"),
    # -- values checked where they enter, with their valid range; booleans parse strictly
    ("device mps", lambda t: train(t, "--device", "mps"), "--device"),
    ("device meta", lambda t: train(t, "--device", "meta"), "--device"),
    ("lr inf", lambda t: train(t, "--lr", "inf"), "--lr must be a finite number"),
    ("label smoothing 2", lambda t: train(t, "--set", "label_smoothing=2"), "--label-smoothing"),
    ("negative gamma", lambda t: train(t, "--gamma", "-1"), "--gamma"),
    ("warm-up longer than the run", lambda t: train(t, "--warmup-epochs", "5"), "--warmup-epochs"),
    ("negative warm-up", lambda t: train(t, "--warmup-epochs", "-1"), "--warmup-epochs"),
    ("eval every 0", lambda t: train(t, "--eval-every", "0"), "--eval-every"),
    (
        "proposer option not a number",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "uniform",
            "--ratio",
            ".5",
            "--option",
            "min_channels=abc",
        ],
        "min_channels",
    ),
    (
        "proposer option not an integer",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "uniform",
            "--ratio",
            ".5",
            "--option",
            "min_channels=2.5",
        ],
        "min_channels",
    ),
    (
        "proposer boolean maybe",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "random",
            "--ratio",
            ".5",
            "--option",
            "global_ranking=maybe",
        ],
        "true or false",
    ),
    ("boolean flag value", lambda t: train(t, "--set", "nesterov=maybe"), "true or false"),
    (
        "unknown TOML key",
        lambda t: ["spaces", "show", toml(t, 'extends = "resnet20_channels"\nname = "mine"\nepochz = 3\n')],
        "unknown key",
    ),
    (
        "unknown [model] key",
        lambda t: ["spaces", "show", toml(t, 'extends = "resnet20_channels"\nname = "mine"\n[model]\ndepht = 32\n')],
        "unknown [model] setting",
    ),
    (
        "TOML name shadows a shipped space",
        lambda t: ["spaces", "show", toml(t, 'extends = "resnet20_channels"\nname = "resnet56_channels"\n')],
        "already has",
    ),
    ("TOML not UTF-8", lambda t: ["spaces", "show", toml(t, b'family = "cifar_resnet"\n# \xff\xfe\n')], "UTF-8"),
    ("genotype not UTF-8", lambda t: ["cost", str(write(t / "g.json", "x").with_suffix(".json"))], "not valid JSON"),
    ("absurd --num-classes", lambda t: ["cost", r20(t), "--num-classes", "1000000000"], "--num-classes"),
    # -- corrupt inputs that are not data
    (
        "truncated --reference",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "l1",
            "--ratio",
            ".5",
            "--reference",
            truncated_checkpoint(t),
        ],
        "--reference",
    ),
    (
        "JSON given as --reference",
        lambda t: [
            "propose",
            "--space",
            r20(t),
            "--proposer",
            "l1",
            "--ratio",
            ".5",
            "--reference",
            genotype_file(t, "{}"),
        ],
        "JSON file, not a checkpoint",
    ),
    ("truncated --weights", lambda t: train(t, "--weights", truncated_checkpoint(t)), "--weights"),
    ("deeply nested JSON genotype", lambda t: ["cost", str(write(t / "deep.json", "[" * 200000))], "nested"),
    (
        "TOML given as genotype",
        lambda t: ["cost", toml(t, 'extends = "resnet20_channels"\nname = "x"\n')],
        "space definition",
    ),
    (
        "journal cut off mid-line",
        lambda t: search(t, "--out", study_with_journal(t, _JOURNAL_LINE + b'{"op_code": 4, "wor')),
        "cut off",
    ),
    ("journal that is not a journal", lambda t: search(t, "--out", study_with_journal(t, b"hello\n")), "not an Optuna"),
    ("journal path is a folder", lambda t: search(t, "--out", study_with_journal(t, None, folder=True)), "is a folder"),
    # -- scale-out misuse
    ("--gpus without a GPU", lambda t: search(t, "--gpus", "0"), "GPU"),
    ("SQLite with workers", lambda t: search(t, "--workers", "2", "--storage", f"sqlite:///{t}/s.db"), "SQLite"),
    ("in-memory SQLite with workers", lambda t: search(t, "--workers", "2", "--storage", "sqlite://"), "SQLite"),
    # -- data that cannot be learned
    (
        "one-class dataset",
        lambda t: ["train", r20(t), "--dataset", "imagefolder", "--data-dir", one_class_tree(t), "--epochs", "1"],
        "class",
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
    assert len(CASES) >= 60


def test_json_errors_also_come_as_json_on_stdout(tmp_path, capsys):
    code = main(["cost", str(tmp_path / "missing.json"), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith("prunenas: error:")
    payload = json.loads(captured.out)
    assert payload["exit_code"] == 2 and "does not exist" in payload["error"]
