"""The genotype: what a pruning method decided, as a frozen, validated, hashable value.

A genotype names its space and gives one value per gene, in network order: an int (channels) for
structured spaces, a float density in [0, 1] for unstructured ones (0: a layer emptied). Any other keys of the JSON file
are provenance (proposer, target, seed, source paper...), kept but not part of the identity.

File format (the public contract)::

    {"space": "resnet56_channels", "genes": {"stage1_width": 16, "stage1_block1": 6, ...}, "proposer": "l1"}

A genotype of a space defined by the user's own files (a TOML file, a model factory's Python file) also
records where they were and their content hash, under the optional provenance key `space_origin`
(written by `to_dict` from the space loaded under that name; see `prunenas.space_files`), so the space
is found again from any folder. Files without it load as before.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prunenas.errors import GenotypeError
from prunenas.space_files import ORIGIN_KEY, genotype_path, loaded_origin

GeneValue = int | float

# Keys of a genotype file that are not provenance.
_CORE_KEYS = ("space", "genes")


def _check_gene(name: object, value: object) -> GeneValue:
    if not isinstance(name, str) or not name:
        raise GenotypeError(f"gene names must be non-empty strings, got {name!r}")
    # bool is an int subclass; true/false in a genotype file is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GenotypeError(f"gene {name!r} has value {value!r}; a gene is an int (channels) or a float (density)")
    if isinstance(value, float) and not math.isfinite(value):
        raise GenotypeError(f"gene {name!r} has value {value!r}; gene values must be finite numbers")
    return value


#: Files users give where a genotype is wanted, by suffix: what they are (the message says so, not "bad JSON").
_NOT_A_GENOTYPE = {
    ".onnx": "an exported ONNX model (`prunenas evaluate` takes it)",
    ".pt": "a checkpoint (`prunenas export` takes the run folder that holds it)",
    ".pth": "a checkpoint",
    ".journal": "a study journal",
    ".png": "an image",
    ".csv": "a table",
}
_WHERE_GENOTYPES_ARE = (
    "a genotype is a JSON file: genotype.json in a run folder, best/*.json in a study folder, the -o FILE of "
    "`prunenas propose`, or a shipped name (search_spaces/genotypes/)"
)


@dataclass(frozen=True, eq=False)
class Genotype:
    """An architecture: a space name and an ordered gene -> value mapping, plus provenance.

    Equality and hashing use `key`, which covers the space and the genes only; two genotypes found
    by different proposers but describing the same architecture are equal.
    """

    space: str
    genes: Mapping[str, GeneValue]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.space, str) or not self.space:
            raise GenotypeError(f"a genotype needs a non-empty 'space' name, got {self.space!r}")
        if not isinstance(self.genes, Mapping) or not self.genes:
            raise GenotypeError("a genotype needs a non-empty 'genes' object mapping gene name -> value")
        genes = {name: _check_gene(name, value) for name, value in self.genes.items()}
        if not isinstance(self.provenance, Mapping):
            raise GenotypeError("genotype provenance must be a mapping")
        provenance = dict(self.provenance)
        clash = [k for k in provenance if k in _CORE_KEYS]
        if clash:
            raise GenotypeError(f"provenance may not use the reserved keys {clash}")
        try:
            json.dumps(provenance)
        except (TypeError, ValueError) as exc:
            raise GenotypeError(f"genotype provenance must be JSON-serialisable: {exc}") from None
        object.__setattr__(self, "genes", MappingProxyType(genes))
        object.__setattr__(self, "provenance", MappingProxyType(provenance))

    # -- identity ----------------------------------------------------------------------------
    def canonical_json(self) -> str:
        """The identity of the architecture: space and genes, genes in network order, no spaces."""
        return json.dumps({"space": self.space, "genes": dict(self.genes)}, separators=(",", ":"), ensure_ascii=True)

    @property
    def key(self) -> str:
        """A stable 16-hex-digit content hash of `canonical_json()` (pinned by a regression test)."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Genotype):
            return NotImplemented
        return self.canonical_json() == other.canonical_json()

    def __hash__(self) -> int:
        return hash(self.canonical_json())

    # -- derived copies ----------------------------------------------------------------------
    def with_provenance(self, **extra: Any) -> Genotype:
        """A copy with provenance keys added or replaced."""
        return Genotype(self.space, self.genes, {**self.provenance, **extra})

    def values(self) -> list[GeneValue]:
        """Gene values in network order."""
        return list(self.genes.values())

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The file form: space, genes, then provenance keys (sorted). `space_origin` is that of the space
        loaded under this genotype's space name in this process, when one was (see the module docstring)."""
        provenance = dict(self.provenance)
        loaded, origin = loaded_origin(self.space)
        if loaded:
            provenance.pop(ORIGIN_KEY, None)
            if origin is not None:
                provenance[ORIGIN_KEY] = origin
        out: dict[str, Any] = {"space": self.space, "genes": dict(self.genes)}
        out.update({k: provenance[k] for k in sorted(provenance)})
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: object, *, origin: str = "genotype") -> Genotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(
                f"{origin}: expected a JSON object like "
                '{"space": "resnet56_channels", "genes": {...}}, '
                f"got {type(data).__name__}"
            )
        missing = [k for k in _CORE_KEYS if k not in data]
        if missing:
            raise GenotypeError(
                f"{origin}: missing key(s) {missing}; a genotype file needs "
                '{"space": NAME, "genes": {GENE: VALUE, ...}}'
            )
        provenance = {k: v for k, v in data.items() if k not in _CORE_KEYS}
        try:
            return cls(data["space"], data["genes"], provenance)
        except GenotypeError as exc:
            raise GenotypeError(f"{origin}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, origin: str = "genotype") -> Genotype:
        if origin.endswith(".toml"):
            raise GenotypeError(
                f"{origin} is a space definition (TOML), not a genotype; pass it as --space and give a genotype JSON "
                "file, a shipped genotype name or a space name (its reference) as the genotype"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(
                f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                "fix the file or write it with `prunenas propose -o FILE`"
            ) from None
        except RecursionError:
            raise GenotypeError(f"{origin}: JSON nested too deeply to be a genotype; pass a genotype file") from None
        return cls.from_dict(data, origin=origin)

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """A genotype from a JSON file, or by the name of a shipped genotype (`li2017_resnet56_b`)."""
        p = Path(path)
        if not p.exists() and isinstance(path, str) and p.suffix == "" and len(p.parts) == 1:
            p = genotype_path(path)
        what = _NOT_A_GENOTYPE.get(p.suffix.lower())
        if what is not None and p.is_file():
            raise GenotypeError(f"{str(p)!r} is {what}, not a genotype; {_WHERE_GENOTYPES_ARE}")
        if p.is_dir() and (p / "genotype.json").is_file():
            raise GenotypeError(f"{str(p)!r} is a run folder; its genotype is {str(p / 'genotype.json')!r}")
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GenotypeError(
                f"genotype file {str(p)!r} does not exist; pass the path of a genotype JSON file "
                "(shipped ones are under search_spaces/genotypes/)"
            ) from None
        except IsADirectoryError:
            raise GenotypeError(f"{str(p)!r} is a folder; pass the path of a genotype JSON file") from None
        except UnicodeDecodeError:
            raise GenotypeError(f"{str(p)!r} is a binary file, not a genotype JSON; {_WHERE_GENOTYPES_ARE}") from None
        except OSError as exc:
            raise GenotypeError(f"cannot read genotype file {str(p)!r}: {exc}") from None
        return cls.from_json(text, origin=str(p))

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(p)
        return p
