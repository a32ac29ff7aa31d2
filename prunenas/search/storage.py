"""Where a study lives and who runs its trials: Optuna storage (a journal file in the study folder, or
a database URL), the study-wide trial cap, stale-trial recovery, Ctrl-C requeueing, and the worker
processes of `--workers`/`--gpus` (each receives the resolved search configuration as JSON)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna

from prunenas.errors import PrunenasError
from prunenas.search.config import CONFIG_FILE, SearchConfig
from prunenas.search.objective import Objective, SurplusTrial

JOURNAL = "study.journal"


def make_storage(config: SearchConfig) -> Any:
    """Optuna storage: a journal file in the study folder, or the --storage URL (PostgreSQL, ...)."""
    if config.storage:
        url = _with_driver(config.storage)
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=max(1, round(config.heartbeat)),
                grace_period=max(2, round(3 * config.heartbeat)),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
        except Exception as exc:
            raise PrunenasError(
                f"cannot open storage {_redact(url)!r} ({_first_line(exc)[:200]}); check the URL "
                "(e.g. postgresql://user:pass@host:5432/db) and that the server is reachable"
            ) from None
    from optuna.storages.journal import JournalFileBackend

    config.out.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(config.out / JOURNAL)))


def _with_driver(url: str) -> str:
    """postgresql:// uses SQLAlchemy's default driver (psycopg 3); fall back to psycopg2 when only it is there."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        cred, _, host = tail.rpartition("@")
        user = cred.split(":", 1)[0]
        return f"{head}://{user}:***@{host}" if ":" in cred else url
    return url


class StorageLost(OSError):
    """The study storage stopped answering in the middle of a run."""


def _silence_storage_errors_in_threads() -> None:
    """Optuna's heartbeat thread dies with a traceback when the database goes away; the main thread
    reports that in one line, so the thread's storage errors are not printed."""
    previous = threading.excepthook
    if getattr(previous, "_prunenas", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, storage_errors()):
            return
        previous(args)

    hook._prunenas = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def storage_reachable(study: optuna.Study) -> bool:
    try:
        study.user_attrs  # noqa: B018 - a round trip to the storage
        return True
    except Exception:
        return False


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the storage went away (database down, journal file gone)."""
    errors: list[type[BaseException]] = [OSError, optuna.exceptions.StorageInternalError]
    try:
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # pragma: no cover - optuna depends on sqlalchemy
        pass
    return tuple(errors)


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell: leave it to heartbeats
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker process on this machine is gone as FAIL and enqueue them
    again (same genotype: the retry resumes the run folder's last checkpoint). Returns their numbers."""
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        if host is None or pid is None or _alive(str(host), int(pid)):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):
            continue  # another process got there first
        retry(study, t)
        recovered.append(t.number)
    return recovered


def retry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial's genotype again; its run folder makes the retry resume, not restart."""
    attrs = {k: v for k, v in t.user_attrs.items() if k in ("origin", "proposer", "target")}
    attrs["retry_of"] = int(t.user_attrs.get("retry_of", t.number))
    study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)


def n_done(study: optuna.Study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            counts["done"] += 1
        elif t.state == optuna.trial.TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == optuna.trial.TrialState.WAITING:
            counts["waiting"] += 1
    return counts


TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def run_trials(
    study: optuna.Study,
    objective: Objective,
    config: SearchConfig,
    on_trial: TrialCallback | None = None,
    poll_s: float = 1.0,
) -> None:
    """Run trials one at a time until the study (all workers, all machines) holds `trials` done ones.

    While the last places are held by running trials of other workers this one waits: if such a
    worker dies, its trial turns stale (heartbeat, or its process is gone) and is queued again."""
    cap = config.budget.trials
    deadline = time.monotonic() + config.timeout if config.timeout else None
    progress = None
    if not config.quiet and not config.worker_only:
        from tqdm.auto import tqdm

        progress = tqdm(total=cap, initial=min(cap, n_done(study)), desc="trials", unit="trial")

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            progress.n = min(cap, n_done(study))
            acc = trial.user_attrs.get("val_acc")
            last = f"{acc:.3f}" if isinstance(acc, float) else trial.state.name.lower()
            progress.set_postfix({"last": last, "MACs": f"{trial.user_attrs.get('macs_ratio', 0):.2f}"})
        if on_trial is not None:
            on_trial(study, trial)

    try:
        while deadline is None or time.monotonic() < deadline:
            counts = _counts(study)
            if counts["done"] >= cap:
                break
            if counts["done"] + counts["running"] >= cap and counts["waiting"] == 0:
                recover_stale_trials(study)  # a dead worker's trial on this machine
                optuna.storages.fail_stale_trials(study)  # a no-op without database heartbeats
                time.sleep(poll_s)
                continue
            try:
                study.optimize(objective, n_trials=1, callbacks=[after_trial], catch=(RuntimeError, SurplusTrial))
            except storage_errors():
                raise
            except Exception as exc:
                # Optuna can fail in its own bookkeeping when the database vanishes mid-trial: ask
                # the storage directly whether that is what happened.
                if storage_reachable(study):
                    raise
                raise StorageLost("the storage stopped answering") from exc
    except KeyboardInterrupt:
        requeue_own_trials(study)
        raise
    finally:
        if progress is not None:
            progress.close()


def requeue_own_trials(study: optuna.Study) -> None:
    """After Ctrl-C: this process's interrupted trial is failed and queued again, so the next run of
    the same command resumes it from its run folder's last checkpoint."""
    me = (socket.gethostname(), os.getpid())
    with contextlib.suppress(Exception):
        retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
        for t in study.get_trials(deepcopy=False):
            if (t.user_attrs.get("host"), t.user_attrs.get("pid")) != me or t.number in retried:
                continue
            if t.state == optuna.trial.TrialState.RUNNING:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            elif t.state != optuna.trial.TrialState.FAIL or t.user_attrs.get("surplus"):
                continue
            retry(study, t)


def worker_commands(config: SearchConfig) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of each worker process of this machine. The resolved configuration is
    written to the study folder as JSON and every worker reads it (nothing is parsed from argv)."""
    path = replace(config, worker_only=True, quiet=True).save(config.out / CONFIG_FILE)
    base = [sys.executable, "-m", "prunenas.search.worker", str(path)]
    gpus = list(config.gpus) or [""]
    out = []
    for gpu in gpus:
        env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu else {}
        out += [(base, env)] * config.workers
    return out


def run_workers(
    study: optuna.Study,
    objective: Objective,
    config: SearchConfig,
    log: Callable[[str], None],
    on_trial: TrialCallback | None = None,
    poll_s: float = 2.0,
) -> None:
    """Start the worker processes, show the study's progress, and wait for them."""
    commands = worker_commands(config)
    log(f"starting {len(commands)} worker processes" + (f" on GPUs {','.join(config.gpus)}" if config.gpus else ""))
    procs = [subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL) for argv, env in commands]
    progress = None
    if not config.quiet:
        from tqdm.auto import tqdm

        progress = tqdm(total=config.budget.trials, initial=min(config.budget.trials, n_done(study)), desc="trials")
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            if progress is not None:
                progress.n = min(config.budget.trials, n_done(study))
                progress.refresh()
    except KeyboardInterrupt:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        raise
    finally:
        if progress is not None:
            progress.n = min(config.budget.trials, n_done(study))
            progress.close()
    failed = [p.returncode for p in procs if p.returncode not in (0, None)]
    if failed:
        log(f"{len(failed)} worker(s) exited with codes {failed}; their trials were failed and queued again")
    if n_done(study) < config.budget.trials:
        log(f"the workers stopped at {n_done(study)}/{config.budget.trials} trials; finishing here")
        run_trials(study, objective, config, on_trial)
