"""What a training run reports (`prunenas.train.train`): one `EpochMetrics` per epoch, handed to the run's
callbacks; `StopTraining`, which a callback raises to end the run early; and the run's `TrainResult`.

Plain data with no torch in it, so the checkpoint and run-file modules, the search and the metrics can use
these types without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


class StopTraining(Exception):
    """Raised by a callback to end a run early; the reason is recorded in the result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float
    lr: float
    seconds: float
    images_per_s: float
    val_loss: float | None = None
    val_acc: float | None = None
    test_acc: float | None = None  # only with RunSettings.test_every_epoch (the papers' test-selected protocol)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced. `val_acc`/`test_acc` are of the final model (test: evaluated once).

    `best_test_acc`/`best_test_epoch` exist only when the test set was evaluated after every epoch
    (`RunSettings.test_every_epoch`): the best epoch chosen BY TEST accuracy, as the Rethinking code reports
    it, an optimistic number kept beside the honest final one."""

    genotype_key: str
    recipe: str
    epochs: int  # epochs planned
    epochs_run: int
    val_acc: float | None
    best_val_acc: float | None
    best_epoch: int | None
    test_acc: float | None
    wall_time_s: float
    images_per_s: float
    seed: int
    stopped: str | None  # None when the run finished; else why it stopped
    history: tuple[EpochMetrics, ...] = field(default_factory=tuple)
    resumed_from: int = 0  # epochs already done in the checkpoint this run resumed from
    best_test_acc: float | None = None  # test-selected (see above)
    best_test_epoch: int | None = None

    @property
    def finished(self) -> bool:
        return self.stopped is None and self.epochs_run >= self.epochs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [h.to_dict() for h in self.history]
        d["finished"] = self.finished
        return d


Callback = Callable[[EpochMetrics], None]


def summarize(
    history: Sequence[EpochMetrics],
    *,
    genotype_key: str,
    recipe: str,
    epochs: int,
    seed: int,
    test_acc: float | None,
    wall_time_s: float,
    stopped: str | None,
    resumed_from: int = 0,
) -> TrainResult:
    """The `TrainResult` of a run's `history`: the last and best validation accuracy, the best epoch by
    test accuracy where the test set was evaluated every epoch, and the images/s of the timed epochs
    weighted by their seconds (epochs restored from a checkpoint count as they were measured)."""
    vals = [(h.val_acc, h.epoch) for h in history if h.val_acc is not None]
    best = max(vals) if vals else (None, None)
    tests = [(h.test_acc, h.epoch) for h in history if h.test_acc is not None]
    best_test = max(tests) if tests else (None, None)
    timed = [h for h in history if h.seconds > 0]
    ips = sum(h.images_per_s * h.seconds for h in timed) / sum(h.seconds for h in timed) if timed else 0.0
    return TrainResult(
        genotype_key=genotype_key,
        recipe=recipe,
        epochs=epochs,
        epochs_run=len(history),
        val_acc=history[-1].val_acc if history else None,
        best_val_acc=best[0],
        best_epoch=best[1],
        test_acc=test_acc,
        wall_time_s=wall_time_s,
        images_per_s=ips,
        seed=seed,
        stopped=stopped,
        history=tuple(history),
        resumed_from=resumed_from,
        best_test_acc=best_test[0],
        best_test_epoch=best_test[1],
    )
