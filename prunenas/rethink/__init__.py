"""The Rethinking comparison (Liu et al., ICLR 2019) end to end, plus Frankle et al.'s mask ablations.

One study compares, for one pruned genotype of a space, N seeds of each arm:

  unpruned    the space's reference genotype trained with the standard recipe (or a given checkpoint)
  fine-tuned  the base reference pruned to the genotype, then the finetune recipe (40 epochs, lr 0.001):
              the space's `initial_state`: channel spaces inherit the reference's surviving weights
              (`prunenas.surgery.inherit_channels`: per layer, the channels with the largest filter L1 norm,
              as Li et al.); density spaces keep the reference's weights under the proposer's mask (a
              genotype file: per-layer magnitude masks)
  scratch-E   the pruned genotype from a fresh init, standard epochs E
  scratch-B   the same with epochs int(E * MACs_reference / MACs_pruned) (same compute as the reference)

Density spaces train Scratch-E/B with the pruned model's mask on a fresh init (the Rethinking protocol for
unstructured pruning). `ablations` add Frankle et al.'s (ICLR 2021) arms, all with E epochs:

  mask        the proposer's mask on a fresh init: the Scratch-E runs themselves (for the base seed that
              init is the very one an at-init proposer scored)
  shuffle     the mask shuffled within each layer = the density genotype as the space builds it (same
              per-layer counts, seeded random positions)
  reinit      the proposer's mask on another seeded init (never the one the proposer scored)
  invert      the proposer run with invert=True (keeps the lowest scores), on a fresh init

The proposer runs once, on the base seed's context (the base reference when it scores trained weights,
else the seeded init). Every fine-tune seed starts from that one pruned model (seed k varies the
fine-tuning's batch order and augmentation); every other arm's seed k varies the init too.

Each run lives in its own folder under the study folder (`<arm>-e<epochs>-s<seed>[-<tag>]/`, named by
`ArmPlan.run_dir` alone, as written by `prunenas.train.train`; the tag names what the starting weights came
from, see `source_tags`); a run whose metrics.json says it is done is not trained again, and one that was
interrupted resumes from its checkpoint, so running the same command again finishes the study.

The package: `settings` (the CLI flags that size a study), `config` (RethinkConfig, the arm and ablation
names, protocol preset, epochs of the budget), `checks` (refusing bad configurations), `identity` (the tags
of the runs' starting weights, the study folder), `plan` (the arms and their run folders, the dry run),
`run` (training the arms), `report` (tables, plot and the files of the study folder).
"""

from typing import TYPE_CHECKING

from prunenas._lazy import lazy_exports

if TYPE_CHECKING:
    from prunenas.rethink.checks import check_config, parse_ablations
    from prunenas.rethink.config import (
        ABLATIONS,
        ARMS,
        LABELS,
        REINIT_OFFSET,
        RethinkConfig,
        resolve_epochs,
        with_protocol,
    )
    from prunenas.rethink.identity import default_study_dir, source_tags
    from prunenas.rethink.plan import ArmPlan, Plan, dry_run, known_train_images, make_plan
    from prunenas.rethink.report import (
        GENOTYPE_FILE,
        MASKS_FILE,
        TABLE_JSON,
        TABLE_PNG,
        TABLE_TXT,
        format_plan,
        format_results,
        genotype_name,
        paper_row,
        plot_arms,
        write_outputs,
    )
    from prunenas.rethink.run import ArmResult, Log, RethinkOutcome, RunRecord, run_rethink
    from prunenas.rethink.settings import BUDGETS, RethinkSettings

_EXPORTS = {
    "ABLATIONS": "prunenas.rethink.config",
    "ARMS": "prunenas.rethink.config",
    "ArmPlan": "prunenas.rethink.plan",
    "ArmResult": "prunenas.rethink.run",
    "BUDGETS": "prunenas.rethink.settings",
    "GENOTYPE_FILE": "prunenas.rethink.report",
    "LABELS": "prunenas.rethink.config",
    "Log": "prunenas.rethink.run",
    "MASKS_FILE": "prunenas.rethink.report",
    "Plan": "prunenas.rethink.plan",
    "REINIT_OFFSET": "prunenas.rethink.config",
    "RethinkConfig": "prunenas.rethink.config",
    "RethinkOutcome": "prunenas.rethink.run",
    "RethinkSettings": "prunenas.rethink.settings",
    "RunRecord": "prunenas.rethink.run",
    "TABLE_JSON": "prunenas.rethink.report",
    "TABLE_PNG": "prunenas.rethink.report",
    "TABLE_TXT": "prunenas.rethink.report",
    "check_config": "prunenas.rethink.checks",
    "default_study_dir": "prunenas.rethink.identity",
    "dry_run": "prunenas.rethink.plan",
    "format_plan": "prunenas.rethink.report",
    "format_results": "prunenas.rethink.report",
    "genotype_name": "prunenas.rethink.report",
    "known_train_images": "prunenas.rethink.plan",
    "make_plan": "prunenas.rethink.plan",
    "paper_row": "prunenas.rethink.report",
    "parse_ablations": "prunenas.rethink.checks",
    "plot_arms": "prunenas.rethink.report",
    "resolve_epochs": "prunenas.rethink.config",
    "run_rethink": "prunenas.rethink.run",
    "source_tags": "prunenas.rethink.identity",
    "with_protocol": "prunenas.rethink.config",
    "write_outputs": "prunenas.rethink.report",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ABLATIONS",
    "ARMS",
    "BUDGETS",
    "GENOTYPE_FILE",
    "LABELS",
    "MASKS_FILE",
    "REINIT_OFFSET",
    "TABLE_JSON",
    "TABLE_PNG",
    "TABLE_TXT",
    "ArmPlan",
    "ArmResult",
    "Log",
    "Plan",
    "RethinkConfig",
    "RethinkOutcome",
    "RethinkSettings",
    "RunRecord",
    "check_config",
    "default_study_dir",
    "dry_run",
    "format_plan",
    "format_results",
    "genotype_name",
    "known_train_images",
    "make_plan",
    "paper_row",
    "parse_ablations",
    "plot_arms",
    "resolve_epochs",
    "run_rethink",
    "source_tags",
    "with_protocol",
    "write_outputs",
]
