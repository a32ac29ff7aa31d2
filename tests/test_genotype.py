"""Genotype: the frozen, validated, hashable record of an architecture (GUIDE section 3)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from prunenas.errors import GenotypeError, PrunenasError
from prunenas.genotype import Genotype
from prunenas.spaces import shipped_genotypes

# Regression pins. The key names every cached cost, trained checkpoint and Optuna trial of a genotype:
# changing how it is computed (canonical JSON, hash, length) silently breaks every stored cache and study.
LI2017_RESNET56_B_KEY = "4ae1233ffbaf219d"
SMALL_KEY = "3e780627dbe05293"  # Genotype("resnet20_channels", {"stage1_width": 16, "stage1_block1": 8})


def small(**provenance: object) -> Genotype:
    return Genotype("resnet20_channels", {"stage1_width": 16, "stage1_block1": 8}, provenance)


# -- round trip ------------------------------------------------------------------------------------
def test_json_round_trip_keeps_space_genes_order_and_provenance() -> None:
    genes = {"z_last": 3, "a_first": 0.25, "m_mid": 7}  # deliberately not sorted
    g = Genotype("some_space", genes, {"proposer": "l1", "seed": 2, "target": 0.5, "skip": [1, 2]})
    back = Genotype.from_json(g.to_json())
    assert back == g
    assert back.key == g.key
    assert list(back.genes) == ["z_last", "a_first", "m_mid"]
    assert back.values() == [3, 0.25, 7]
    assert dict(back.provenance) == {"proposer": "l1", "seed": 2, "target": 0.5, "skip": [1, 2]}
    assert isinstance(back.genes["z_last"], int)
    assert isinstance(back.genes["a_first"], float)


def test_to_dict_is_the_file_format() -> None:
    g = small(seed=1, proposer="l1")
    d = g.to_dict()
    assert list(d) == ["space", "genes", "proposer", "seed"]  # core keys first, provenance sorted
    assert d["space"] == "resnet20_channels"
    assert d["genes"] == {"stage1_width": 16, "stage1_block1": 8}
    assert json.loads(g.to_json(indent=None)) == d


def test_save_and_load_through_a_file(tmp_path: Path) -> None:
    g = small(proposer="slimming", target=0.3)
    path = g.save(tmp_path / "sub" / "dir" / "g.json")
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))
    loaded = Genotype.load(path)
    assert loaded == g
    assert loaded.key == g.key
    assert dict(loaded.provenance) == {"proposer": "slimming", "target": 0.3}
    assert list(loaded.genes) == ["stage1_width", "stage1_block1"]
    # Saving again over an existing file replaces it.
    g2 = Genotype(g.space, {"stage1_width": 8, "stage1_block1": 8})
    g2.save(path)
    assert Genotype.load(path) == g2


def test_shipped_genotype_loads_with_order_and_provenance() -> None:
    g = Genotype.load(shipped_genotypes()["li2017_resnet56_b"])
    assert g.space == "resnet56_channels"
    names = list(g.genes)
    assert names[0] == "stage1_width"
    assert names[1:10] == [f"stage1_block{i}" for i in range(1, 10)]
    assert names[10] == "stage2_width"
    assert g.provenance["proposer"] == "l1-paper"
    assert "source" in g.provenance


# -- key ---------------------------------------------------------------------------------------------
def test_key_regression_pin_for_shipped_li2017_resnet56_b() -> None:
    g = Genotype.load(shipped_genotypes()["li2017_resnet56_b"])
    assert g.key == LI2017_RESNET56_B_KEY


def test_key_regression_pin_for_a_hand_made_genotype() -> None:
    g = small()
    assert g.canonical_json() == '{"space":"resnet20_channels","genes":{"stage1_width":16,"stage1_block1":8}}'
    assert g.key == SMALL_KEY
    assert len(g.key) == 16
    assert all(c in "0123456789abcdef" for c in g.key)


def test_key_ignores_provenance() -> None:
    assert small().key == small(proposer="l1", seed=3).key
    assert small(proposer="a") == small(proposer="b")
    assert small().with_provenance(note="x").key == SMALL_KEY


def test_key_changes_with_any_gene_and_with_space() -> None:
    base = small()
    assert Genotype(base.space, {"stage1_width": 16, "stage1_block1": 7}).key != base.key
    assert Genotype(base.space, {"stage1_width": 15, "stage1_block1": 8}).key != base.key
    assert Genotype("resnet32_channels", dict(base.genes)).key != base.key
    assert Genotype(base.space, {"stage1_width": 16, "stage1_block1": 8, "stage1_block2": 8}).key != base.key


def test_equality_and_hash() -> None:
    a, b = small(seed=1), small(seed=2)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    c = Genotype(a.space, {"stage1_width": 16, "stage1_block1": 9})
    assert a != c
    assert len({a, b, c}) == 2
    assert a != "resnet20_channels"
    assert {a: "x"}[b] == "x"


def test_with_provenance_adds_and_replaces() -> None:
    g = small(proposer="l1", seed=1).with_provenance(seed=5, target=0.4)
    assert dict(g.provenance) == {"proposer": "l1", "seed": 5, "target": 0.4}
    assert g == small()


# -- immutability --------------------------------------------------------------------------------------
def test_attributes_cannot_be_assigned() -> None:
    g = small()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.space = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.genes = {}  # type: ignore[misc]
    assert g.key == SMALL_KEY


def test_genes_and_provenance_cannot_be_mutated() -> None:
    g = small(proposer="l1")
    with pytest.raises(TypeError):
        g.genes["stage1_block1"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        del g.genes["stage1_block1"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        g.provenance["proposer"] = "x"  # type: ignore[index]
    assert g.key == SMALL_KEY


def test_mutating_the_input_dict_does_not_change_the_genotype() -> None:
    genes = {"stage1_width": 16, "stage1_block1": 8}
    prov = {"proposer": "l1"}
    g = Genotype("resnet20_channels", genes, prov)
    genes["stage1_block1"] = 1
    genes["extra"] = 2
    prov["proposer"] = "changed"
    assert g.key == SMALL_KEY
    assert g.provenance["proposer"] == "l1"


# -- malformed input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("", id="empty-file"),
        pytest.param("[1, 2]", id="a-list"),
        pytest.param('"resnet56_channels"', id="a-string"),
        pytest.param("null", id="null"),
        pytest.param('{"genes": {"a": 1}}', id="missing-space"),
        pytest.param('{"space": "s"}', id="missing-genes"),
        pytest.param('{"space": "s", "genes": {}}', id="empty-genes"),
        pytest.param('{"space": "s", "genes": [1, 2]}', id="genes-a-list"),
        pytest.param('{"space": "", "genes": {"a": 1}}', id="empty-space"),
        pytest.param('{"space": 5, "genes": {"a": 1}}', id="space-not-a-string"),
        pytest.param('{"space": "s", "genes": {"a": true}}', id="bool-value"),
        pytest.param('{"space": "s", "genes": {"a": "16"}}', id="str-value"),
        pytest.param('{"space": "s", "genes": {"a": null}}', id="null-value"),
        pytest.param('{"space": "s", "genes": {"a": [1]}}', id="list-value"),
        pytest.param('{"space": "s", "genes": {"a": NaN}}', id="nan-value"),
        pytest.param('{"space": "s", "genes": {"a": Infinity}}', id="inf-value"),
        pytest.param('{"space": "s", "genes": {"": 1}}', id="empty-gene-name"),
    ],
)
def test_malformed_json_raises_genotype_error(text: str) -> None:
    with pytest.raises(GenotypeError) as info:
        Genotype.from_json(text, origin="my.json")
    assert isinstance(info.value, PrunenasError)
    assert str(info.value).startswith("my.json: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [True, False, "8", None, math.nan, math.inf, -math.inf, [8], {"v": 8}])
def test_constructor_rejects_bad_gene_values(value: object) -> None:
    with pytest.raises(GenotypeError, match="'a'"):
        Genotype("s", {"a": value})  # type: ignore[dict-item]


def test_bad_value_message_names_gene_and_value() -> None:
    with pytest.raises(GenotypeError) as info:
        Genotype.from_json('{"space": "s", "genes": {"conv3": "wide"}}')
    assert "'conv3'" in str(info.value)
    assert "'wide'" in str(info.value)


@pytest.mark.parametrize("reserved", ["space", "genes"])
def test_reserved_provenance_key_raises(reserved: str) -> None:
    with pytest.raises(GenotypeError, match=reserved):
        Genotype("s", {"a": 1}, {reserved: "x"})


def test_non_serialisable_provenance_raises() -> None:
    with pytest.raises(GenotypeError, match="JSON"):
        Genotype("s", {"a": 1}, {"model": object()})
    with pytest.raises(GenotypeError):
        small().with_provenance(path=Path("/tmp"))


def test_non_mapping_provenance_and_genes_raise() -> None:
    with pytest.raises(GenotypeError):
        Genotype("s", {"a": 1}, ["proposer"])  # type: ignore[arg-type]
    with pytest.raises(GenotypeError):
        Genotype("s", [("a", 1)])  # type: ignore[arg-type]


def test_load_missing_file_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError) as info:
        Genotype.load(missing)
    assert "does not exist" in str(info.value)
    assert str(missing) in str(info.value)


def test_load_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError, match="folder"):
        Genotype.load(tmp_path)


def test_load_malformed_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{"space": "s", "genes": {"a": 1},}', encoding="utf-8")
    with pytest.raises(GenotypeError) as info:
        Genotype.load(p)
    assert str(p) in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_load_non_utf8_file_raises(tmp_path: Path) -> None:
    p = tmp_path / "binary.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenotypeError):
        Genotype.load(p)
