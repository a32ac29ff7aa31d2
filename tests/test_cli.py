"""CLI: `prunenas spaces`, `spaces show`, `cost`; exit codes and one-line errors (GUIDE section 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prunenas.cli import main
from prunenas.genotype import Genotype
from prunenas.spaces import get_space, space_names

LI2017_RESNET56_B_KEY = "4ae1233ffbaf219d"  # also pinned in test_genotype.py
# ResNet-56-B under shortcut B adds two 1x1 projections: 16->32 at 16x16 and 32->64 at 8x8.
PROJECTION_MACS = 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_bad_input(rc: int, out: str, err: str, *needles: str) -> None:
    assert rc == 2
    assert "Traceback" not in err + out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prunenas: error: ")
    for needle in needles:
        assert needle in lines[0]


def write_genotype(path: Path, genes: dict[str, object], space: str = "resnet20_channels") -> Path:
    path.write_text(json.dumps({"space": space, "genes": genes}), encoding="utf-8")
    return path


def ref_genes(space: str = "resnet20_channels") -> dict[str, object]:
    return dict(get_space(space).reference().genes)


# -- spaces ----------------------------------------------------------------------------------------------
def test_spaces_lists_every_space(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "spaces")
    assert rc == 0
    assert err == ""
    first_column = {line.split()[0] for line in out.splitlines() if line.strip()}
    for name in space_names():
        assert name in first_column
    assert "125.49M" in out  # resnet56_channels reference MACs, human-readable


def test_spaces_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "spaces", "--json")
    assert rc == 0
    rows = json.loads(out)
    assert [r["space"] for r in rows] == space_names()
    by_name = {r["space"]: r for r in rows}
    r56 = by_name["resnet56_channels"]
    assert (r56["family"], r56["kind"], r56["genes"]) == ("cifar_resnet", "channels", 30)
    assert r56["reference_macs"] == 125485696
    assert by_name["resnet20_density"]["kind"] == "density"
    assert all(isinstance(r["reference_macs"], int) and r["reference_macs"] > 0 for r in rows)


def test_spaces_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "spaces", "show", "resnet56_channels", "--json")
    assert rc == 0
    info = json.loads(out)
    genes = info["genes"]
    assert len(genes) == 30
    expected = [
        name
        for s in (1, 2, 3)
        for name in [f"stage{s}_width"] + [f"stage{s}_block{b}" for b in range(1, 10)]  # network order
    ]
    assert [g["name"] for g in genes] == expected
    assert genes[0]["name"] == "stage1_width"
    assert (genes[0]["type"], genes[0]["low"], genes[0]["high"], genes[0]["reference"]) == ("int", 1, 16, 16)
    assert (genes[-1]["low"], genes[-1]["high"], genes[-1]["reference"]) == (1, 64, 64)
    assert list(info["reference"]) == expected
    assert info["reference"]["stage2_block1"] == 32
    assert info["reference_macs"] == 125485696
    assert {"li2017_resnet56_a", "li2017_resnet56_b"} <= set(info["shipped_genotypes"])
    assert "li2017_vgg16_a" not in info["shipped_genotypes"]
    assert info["config"]["shortcut"] == "A"


def test_spaces_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "spaces", "show", "resnet20_channels")
    assert rc == 0
    assert "stage3_block3" in out
    assert "[1, 64]" in out
    assert "40.55M" in out


def test_spaces_show_a_toml_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "r20b.toml"
    path.write_text('extends = "resnet20_channels"\n[model]\nshortcut = "B"\n')
    rc, out, _ = cli(capsys, "spaces", "show", str(path), "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["space"] == "r20b"
    assert info["config"]["shortcut"] == "B"
    assert info["reference_macs"] == 40551040 + PROJECTION_MACS


def test_spaces_json_flag_before_show(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "spaces", "--json", "show", "resnet20_channels")
    assert rc == 0
    assert json.loads(out)["space"] == "resnet20_channels"


# -- cost -------------------------------------------------------------------------------------------------
def test_cost_shipped_genotype_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "cost", "li2017_resnet56_b", "--json")
    assert rc == 0
    assert err == ""
    d = json.loads(out)
    assert d["space"] == "resnet56_channels"
    assert d["key"] == LI2017_RESNET56_B_KEY
    assert isinstance(d["macs"], int)
    assert isinstance(d["params"], int)
    assert abs(d["macs"] - 90.9e6) <= 0.005 * 90.9e6
    assert d["params"] == 735712
    assert d["reference_macs"] == 125485696
    assert d["macs_ratio"] == pytest.approx(d["macs"] / d["reference_macs"])


def test_cost_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "cost", "li2017_resnet56_b")
    assert rc == 0
    assert LI2017_RESNET56_B_KEY in out
    assert "90.91M" in out
    assert "0.724" in out


def test_cost_of_a_file_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    genes = {**ref_genes(), "stage1_block1": 8, "stage3_block3": 32}
    path = write_genotype(tmp_path / "mine.json", genes)
    rc, out, _ = cli(capsys, "cost", str(path), "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["key"] == Genotype("resnet20_channels", genes).key
    # each halved inner conv halves two convs: 16x16x3x3 twice at 32x32, 64x64x3x3 twice at 8x8
    saved = 2 * 8 * 16 * 9 * 32 * 32 + 2 * 32 * 64 * 9 * 8 * 8
    assert d["reference_macs"] - d["macs"] == saved


def test_cost_num_classes(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "cost", "li2017_resnet56_b", "--json", "--num-classes", "100")
    assert rc == 0
    assert json.loads(out)["macs"] == 90907264 + 64 * 90


def test_cost_with_space_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    toml = tmp_path / "r56b.toml"
    toml.write_text('extends = "resnet56_channels"\n[model]\nshortcut = "B"\n')
    rc, out, _ = cli(capsys, "cost", "li2017_resnet56_b", "--space", str(toml), "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["space"] == "r56b"
    assert d["macs"] == 90907264 + PROJECTION_MACS


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys)
    assert rc == 2
    assert "usage: prunenas" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == "prunenas 0.1.0"


# -- bad input: exit 2, one line, no traceback --------------------------------------------------------------
def test_unknown_space(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "spaces", "show", "resnet57_channels"), "resnet57_channels", "resnet56_channels")


def test_unknown_shipped_genotype(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "cost", "li2017_resnet57_b"), "li2017_resnet57_b", "li2017_resnet56_b")


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert_bad_input(*cli(capsys, "cost", str(missing)), str(missing), "does not exist")


def test_directory_instead_of_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_bad_input(*cli(capsys, "cost", str(tmp_path)), "folder")


def test_malformed_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"space": "resnet20_channels", "genes": {')
    assert_bad_input(*cli(capsys, "cost", str(path)), str(path), "not valid JSON")


def test_out_of_range_gene(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_genotype(tmp_path / "wide.json", {**ref_genes(), "stage2_block2": 999})
    assert_bad_input(*cli(capsys, "cost", str(path)), "'stage2_block2'", "999", "[1, 32]")


def test_zero_width_gene(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_genotype(tmp_path / "zero.json", {**ref_genes(), "stage1_width": 0})
    assert_bad_input(*cli(capsys, "cost", str(path)), "'stage1_width'", "[1, 16]")


def test_unknown_gene(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_genotype(tmp_path / "extra.json", {**ref_genes(), "stage4_width": 128})
    assert_bad_input(*cli(capsys, "cost", str(path)), "stage4_width", "resnet20_channels")


def test_genotype_of_unknown_space(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_genotype(tmp_path / "alien.json", {"w": 1}, space="alien_space")
    assert_bad_input(*cli(capsys, "cost", str(path)), "alien_space")


def test_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "cost", "li2017_resnet56_b", "--bogus"), "--bogus")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "frobnicate"), "frobnicate")


def test_missing_positional_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "cost"), "genotype")


def test_non_integer_num_classes(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "cost", "li2017_resnet56_b", "--num-classes", "ten"), "ten")


@pytest.mark.parametrize("n", ["0", "-5"])
def test_non_positive_num_classes(capsys: pytest.CaptureFixture[str], n: str) -> None:
    try:
        result = cli(capsys, "cost", "li2017_resnet56_b", "--num-classes", n)
    except Exception as exc:  # a bug: bad input must not raise
        pytest.fail(f"raised {exc!r}")
    assert_bad_input(*result)


def test_space_flag_pointing_at_malformed_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    toml = tmp_path / "broken.toml"
    toml.write_text('family = "cifar_resnet"\n[model\n')
    assert_bad_input(*cli(capsys, "cost", "li2017_resnet56_b", "--space", str(toml)), str(toml), "not valid TOML")


def test_spaces_show_malformed_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    toml = tmp_path / "broken.toml"
    toml.write_text("family = \n")
    assert_bad_input(*cli(capsys, "spaces", "show", str(toml)), "not valid TOML")


def test_space_flag_unknown_space(capsys: pytest.CaptureFixture[str]) -> None:
    assert_bad_input(*cli(capsys, "cost", "li2017_resnet56_b", "--space", "nowhere"), "'nowhere'")


# -- the real entry point -------------------------------------------------------------------------------------
def test_module_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PRUNENAS_SPACES_PATH"}
    good = subprocess.run(
        [sys.executable, "-m", "prunenas.cli", "cost", "li2017_resnet56_b", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert good.returncode == 0, good.stderr
    d = json.loads(good.stdout)
    assert (d["key"], d["macs"]) == (LI2017_RESNET56_B_KEY, 90907264)

    bad = subprocess.run(
        [sys.executable, "-m", "prunenas.cli", "cost", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("prunenas: error: ")


def test_bash_completion_is_generated_from_the_parser(capsys, tmp_path):
    import shutil
    import subprocess

    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete -o filenames -F _prunenas prunenas" in script
    assert "--max-macs-ratio" in script and "--label-smoothing" in script  # generated, not hand-listed
    if shutil.which("bash"):
        path = tmp_path / "pn.bash"
        path.write_text(script)
        probe = 'source "$1"; COMP_WORDS=(prunenas search --dataset ""); COMP_CWORD=3; _prunenas; '
        probe += 'echo "${COMPREPLY[@]}"'
        out = subprocess.run(["bash", "-c", probe, "_", str(path)], capture_output=True, text=True, check=True).stdout
        assert out.split() == [
            "cifar10", "cifar100", "digits", "imagefolder", "shapes-seg", "shapes-det", "voc-seg", "coco"
        ]  # fmt: skip
