"""What the runs and the folder of a Rethinking study are told apart by beyond genotype, recipe and seed:
the tags of their starting weights (`source_tags`, `teacher_source`) and the default study folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunenas.config import fingerprint
from prunenas.genotype import Genotype
from prunenas.rethink.config import RethinkConfig, finetune_source


def teacher_source(config: RethinkConfig, base_epochs: int) -> dict[str, Any] | None:
    """What the scratch-e-kd arm's teacher is, for its runs' tag: the given checkpoint, the given reference,
    or the unpruned arm's runs (each seed's own model); None without --teacher."""
    if config.teacher is None:
        return None
    if config.teacher != "reference":
        return {"checkpoint": str(Path(config.teacher).resolve())}
    if config.reference is not None:
        return {"reference": str(Path(config.reference).resolve())}
    return {"unpruned": {"epochs": base_epochs, "seed": "each run's own"}}


def source_tags(config: RethinkConfig, base_epochs: int) -> tuple[str, str]:
    """6-hex tags of what a run's starting weights depend on beyond its genotype, recipe and seed:
    (the reference the pruned model is cut from, that reference plus the mask's source). They are part
    of the run folder names of the arms that depend on them (fine-tuning; density arms under the mask),
    so two studies of the same genotype (another --reference, proposer or base seed) never share such
    runs: `train` identifies a run by genotype, recipe, seed and data, not by its initial weights."""
    trained_by = finetune_source(config)
    if trained_by is not None:  # the proposer's own trained model (the fine-tuned arm's starting weights)
        reference: dict[str, Any] = {
            "trained by the proposer": {
                "proposer": config.proposer, "options": dict(config.proposer_options),
                "target": config.target.to_dict() if config.target is not None else None,
                "seed": config.settings.seed,
            }
        }  # fmt: skip
    elif config.reference is not None:
        reference = {"checkpoint": str(Path(config.reference).resolve())}
    else:
        reference = {"unpruned": {"epochs": base_epochs, "seed": config.settings.seed}}
    if config.genotype is not None:
        source: dict[str, Any] = {"masks": "layer-wise magnitude of the reference"}
    else:
        source = {
            "proposer": config.proposer,
            "options": dict(config.proposer_options),
            "target": config.target.to_dict() if config.target is not None else None,
            "seed": config.settings.seed,
        }

    def tag(obj: Any) -> str:
        return fingerprint(obj, length=6)

    return tag(reference), tag({"reference": reference, "source": source})


def default_study_dir(config: RethinkConfig, genotype: Genotype | None) -> Path:
    """runs/rethink/<space>-<genotype key>-<dataset>/. When the genotype is only known after the reference is
    trained (a proposer that scores trained weights and no --reference), the proposer and what its decision
    depends on name it instead: <space>-<proposer>-<target>[-<options hash>]-s<base seed>-<dataset>/."""
    if genotype is not None:
        return Path("runs") / "rethink" / f"{config.space.slug}-{genotype.key}-{config.dataset}"
    assert config.proposer is not None and config.target is not None
    name = f"{config.proposer}-{config.target.kind.replace('_', '')}{config.target.value:g}"
    if config.proposer_options:
        name += "-" + fingerprint(dict(config.proposer_options), length=6)
    return Path("runs") / "rethink" / f"{config.space.slug}-{name}-s{config.settings.seed}-{config.dataset}"
