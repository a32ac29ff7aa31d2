"""A space travels with its genotypes and runs: a genotype or run of a user's TOML space or model factory
records the file's absolute path and content hash (`space_origin`), so `show`, `cost` and `export` work
from any folder; a changed file is refused (or, when its architecture settings are the same, a warning),
a missing one is one line naming the path and --space."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prunenas.cli import main
from prunenas.spaces import registry

FACTORIES = Path(__file__).resolve().parent / "factories.py"

SPACE_TOML = """
extends = "resnet20_channels"
[model]
depth = 8
shortcut = "B"
widths = [4, 8, 8]
"""


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts and ends with no space loaded (what it loads from tmp_path must not leak)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("PRUNENAS_SPACES_PATH", raising=False)
    registry.clear_cache()
    yield
    registry.clear_cache()


def run(capsys: pytest.CaptureFixture[str], cwd: Path, *argv: str) -> tuple[int, str, str]:
    """`prunenas ARGV` run from `cwd` as a new process would: nothing loaded before."""
    registry.clear_cache()
    os.chdir(cwd)
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line(rc: int, out: str, err: str, *needles: str) -> str:
    assert rc == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prunenas: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the folder the user works in, another folder), and the working folder restored afterwards."""
    monkeypatch.chdir(tmp_path)
    made, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    made.mkdir()
    elsewhere.mkdir()
    return made, elsewhere


def propose(capsys: pytest.CaptureFixture[str], made: Path, space: str) -> Path:
    rc, _, err = run(capsys, made, "propose", "--space", space, "--proposer", "uniform", "--ratio", "0.5",
                       "-o", "g.json")  # fmt: skip
    assert rc == 0, err
    return made / "g.json"


# -- a user's TOML space ---------------------------------------------------------------------------------
@pytest.fixture
def toml_genotype(capsys, folders) -> tuple[Path, Path, Path]:
    made, elsewhere = folders
    (made / "travel_r8.toml").write_text(SPACE_TOML)
    return propose(capsys, made, "travel_r8.toml"), made / "travel_r8.toml", elsewhere


def test_toml_genotype_records_its_file(toml_genotype):
    genotype, toml, _ = toml_genotype
    data = json.loads(genotype.read_text())
    assert data["space"] == "travel_r8"
    recorded = data["space_origin"]["toml"]
    assert recorded["path"] == str(toml.resolve())  # absolute, not "travel_r8.toml"
    assert recorded["sha256"] == sha(toml)
    assert recorded["settings"]["model"]["shortcut"] == "B"


@pytest.mark.parametrize("command", ["show", "cost"])
def test_toml_genotype_works_from_another_folder(capsys, toml_genotype, command):
    genotype, _, elsewhere = toml_genotype
    rc, out, err = run(capsys, elsewhere, command, str(genotype), "--json")
    assert rc == 0, err
    assert json.loads(out)["space"] == "travel_r8"
    assert "warning" not in err


def test_toml_genotype_through_the_python_api_from_another_folder(toml_genotype):
    import prunenas as pn

    genotype, _, elsewhere = toml_genotype
    registry.clear_cache()
    os.chdir(elsewhere)
    assert pn.count_cost(str(genotype)).macs > 0
    assert pn.build(str(genotype)) is not None


def test_toml_genotype_from_another_folder_in_a_new_process(toml_genotype):
    genotype, _, elsewhere = toml_genotype
    env = {k: v for k, v in os.environ.items() if k != "PRUNENAS_SPACES_PATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "prunenas.cli", "cost", str(genotype), "--json"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["space"] == "travel_r8"


def test_toml_whose_architecture_changed_is_refused(capsys, toml_genotype):
    genotype, toml, elsewhere = toml_genotype
    before = sha(toml)
    toml.write_text(SPACE_TOML.replace('"B"', '"A"'))
    line = assert_one_line(*run(capsys, elsewhere, "cost", str(genotype)), str(toml.resolve()), "changed", "--space")
    assert before[:12] in line and sha(toml)[:12] in line  # recorded vs now
    assert "shortcut 'B' -> 'A'" in line
    # the way out the message gives: the file as it is now, chosen explicitly
    rc, _out, err = run(capsys, elsewhere, "cost", str(genotype), "--space", str(toml), "--json")
    assert rc == 0, err


def test_toml_edited_without_changing_the_architecture_is_a_warning(capsys, toml_genotype):
    genotype, toml, elsewhere = toml_genotype
    toml.write_text("# the same space, commented\n" + SPACE_TOML + "[recipe]\nepochs = 3\n")
    rc, _out, err = run(capsys, elsewhere, "cost", str(genotype), "--json")
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: warning: ")
    assert str(toml.resolve()) in lines[0] and "changed" in lines[0]


def test_toml_that_is_gone_names_the_path_and_the_flag(capsys, toml_genotype):
    genotype, toml, elsewhere = toml_genotype
    toml.unlink()
    for command in ("show", "cost"):
        assert_one_line(*run(capsys, elsewhere, command, str(genotype)), str(toml.resolve()), "--space")


def test_a_space_path_folder_with_another_file_of_that_name_is_not_used_silently(capsys, toml_genotype, monkeypatch):
    genotype, _, elsewhere = toml_genotype
    other = elsewhere / "spaces"
    other.mkdir()
    (other / "travel_r8.toml").write_text(SPACE_TOML.replace("[4, 8, 8]", "[8, 8, 8]"))
    monkeypatch.setenv("PRUNENAS_SPACES_PATH", str(other))
    assert_one_line(*run(capsys, elsewhere, "cost", str(genotype)), "travel_r8", "widths", "--space")


# -- a model factory ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "density:"])
def test_factory_genotype_works_from_another_folder(capsys, folders, prefix):
    made, elsewhere = folders
    shutil.copy(FACTORIES, made / "nets.py")
    genotype = propose(capsys, made, f"{prefix}nets.py:plain_cnn@32") if not prefix else None
    if prefix:  # density proposers take --density
        rc, _, err = run(capsys, made, "propose", "--space", f"{prefix}nets.py:plain_cnn@32", "--proposer",
                         "magnitude-init", "--density", "0.5", "-o", "g.json")  # fmt: skip
        assert rc == 0, err
        genotype = made / "g.json"
    assert genotype is not None
    recorded = json.loads(genotype.read_text())["space_origin"]["factory"]
    assert recorded == {"spec": "nets.py:plain_cnn", "path": str((made / "nets.py").resolve()),
                        "sha256": sha(made / "nets.py")}  # fmt: skip
    for command in ("show", "cost"):
        rc, out, err = run(capsys, elsewhere, command, str(genotype), "--json")
        assert rc == 0, err
        assert json.loads(out)["space"] == f"{prefix}nets.py:plain_cnn@32"


def test_module_factory_genotype_works_from_another_folder(capsys, folders):
    made, elsewhere = folders
    (made / "travelpkg").mkdir()
    (made / "travelpkg" / "__init__.py").write_text("")
    shutil.copy(FACTORIES, made / "travelpkg" / "nets.py")
    genotype = propose(capsys, made, "travelpkg.nets:plain_cnn@32")
    recorded = json.loads(genotype.read_text())["space_origin"]["factory"]
    assert recorded["path"] == str((made / "travelpkg" / "nets.py").resolve())
    # another process: the package is neither imported nor importable from here
    for mod in ("travelpkg.nets", "travelpkg"):
        sys.modules.pop(mod, None)
    sys.path[:] = [p for p in sys.path if p not in ("", str(made))]
    rc, out, err = run(capsys, elsewhere, "cost", str(genotype), "--json")
    assert rc == 0, err
    assert json.loads(out)["space"] == "travelpkg.nets:plain_cnn@32"


def test_traced_toml_with_a_relative_factory_works_from_another_folder(capsys, folders):
    made, elsewhere = folders
    shutil.copy(FACTORIES, made / "nets.py")
    (made / "mine.toml").write_text('family = "traced"\n[model]\nfactory = "nets.py:plain_cnn"\ninput_size = 32\n')
    genotype = propose(capsys, made, "mine.toml")
    origin = json.loads(genotype.read_text())["space_origin"]
    assert set(origin) == {"toml", "factory"}
    assert origin["factory"]["path"] == str((made / "nets.py").resolve())
    rc, out, err = run(capsys, elsewhere, "cost", str(genotype), "--json")
    assert rc == 0, err
    assert json.loads(out)["space"] == "mine"


def test_factory_whose_source_changed_is_refused(capsys, folders):
    made, elsewhere = folders
    shutil.copy(FACTORIES, made / "nets.py")
    genotype = propose(capsys, made, "nets.py:plain_cnn@32")
    before = sha(made / "nets.py")
    with (made / "nets.py").open("a") as fh:
        fh.write("\n# edited\n")
    line = assert_one_line(*run(capsys, elsewhere, "cost", str(genotype)), str((made / "nets.py").resolve()),
                           "changed", "--space")  # fmt: skip
    assert before[:12] in line and sha(made / "nets.py")[:12] in line
    # the way out the message gives
    rc, _out, err = run(capsys, elsewhere, "cost", str(genotype), "--space", f"{made / 'nets.py'}:plain_cnn@32")
    assert rc == 0, err


def test_factory_that_is_gone_names_the_path_and_the_flag(capsys, folders):
    made, elsewhere = folders
    shutil.copy(FACTORIES, made / "nets.py")
    genotype = propose(capsys, made, "nets.py:plain_cnn@32")
    recorded = (made / "nets.py").resolve()
    (made / "nets.py").rename(made / "moved.py")
    assert_one_line(*run(capsys, elsewhere, "show", str(genotype)), str(recorded), "--space")
    # the same file content where the spec points from the working folder is the same factory
    shutil.copy(made / "moved.py", elsewhere / "nets.py")
    rc, _out, err = run(capsys, elsewhere, "cost", str(genotype), "--json")
    assert rc == 0, err


# -- runs: export from another folder, and --space ----------------------------------------------------------
def test_export_of_a_factory_run_from_another_folder_and_with_space(capsys, folders):
    made, elsewhere = folders
    shutil.copy(FACTORIES, made / "nets.py")
    rc, _, err = run(capsys, made, "train", "nets.py:plain_cnn@32", "--dataset", "digits", "--train-subset", "64",
                     "--val-size", "32", "--epochs", "1", "--recipe", "proxy", "--out", "run", "-q")  # fmt: skip
    assert rc == 0, err
    assert json.loads((made / "run" / "genotype.json").read_text())["space_origin"]["factory"]["path"] == str(
        (made / "nets.py").resolve()
    )
    rc, _, err = run(capsys, elsewhere, "export", str(made / "run"), "-o", "onnx1", "--json")
    assert rc == 0, err
    assert (elsewhere / "onnx1" / "model.onnx").is_file()
    # the factory file moves: one line naming it and --space; --space points at it
    moved = elsewhere / "lib" / "nets.py"
    moved.parent.mkdir()
    (made / "nets.py").rename(moved)
    assert_one_line(*run(capsys, elsewhere, "export", str(made / "run"), "-o", "onnx2"), "nets.py", "--space")
    assert not (elsewhere / "onnx2").exists()
    rc, _out, err = run(capsys, elsewhere, "export", str(made / "run"), "-o", "onnx2", "--space",
                       f"{moved}:plain_cnn@32", "--json")  # fmt: skip
    assert rc == 0, err
    assert (elsewhere / "onnx2" / "model.onnx").is_file()


def test_export_has_a_space_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    assert "--space" in capsys.readouterr().out


# -- genotypes written before spaces recorded their files, and hand-edited records ---------------------------
def test_old_genotype_of_an_unknown_space_says_it_records_no_file_and_names_space(capsys, folders):
    made, elsewhere = folders
    genes = {"stage1_width": 4, "stage1_block1": 4, "stage2_width": 8, "stage2_block1": 8}
    (made / "old.json").write_text(json.dumps({"space": "travel_gone", "genes": genes}))
    assert_one_line(*run(capsys, elsewhere, "cost", str(made / "old.json")), "travel_gone", "does not record",
                    "--space")  # fmt: skip


@pytest.mark.parametrize("origin", [5, {"toml": "x.toml"}, {"somewhere": {}}, {"factory": {"spec": "torchvision:x"}}])
def test_malformed_space_origin_is_one_line(capsys, folders, origin):
    made, elsewhere = folders
    genes = {"stage1_width": 4}
    (made / "bad.json").write_text(json.dumps({"space": "travel_bad", "genes": genes, "space_origin": origin}))
    assert_one_line(*run(capsys, elsewhere, "cost", str(made / "bad.json")), "space_origin", "--space")


def test_genotypes_of_shipped_spaces_record_no_files(capsys, folders):
    made, _ = folders
    data = json.loads(propose(capsys, made, "resnet20_channels").read_text())
    assert "space_origin" not in data  # a shipped space is found by its name everywhere
