"""Where a study lives and who runs its trials: Optuna storage (a journal file in the study folder, or
a database URL), the study-wide trial cap, stale-trial recovery, Ctrl-C requeueing, and the worker
processes of `--workers`/`--gpus` (each receives the resolved search configuration as JSON)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from prunenas import hardware
from prunenas.errors import PrunenasError
from prunenas.paths import ensure_dir
from prunenas.progress import make_progress, trial_fields, trial_line
from prunenas.search.config import CONFIG_FILE, SearchConfig
from prunenas.search.objective import Objective, SurplusTrial

JOURNAL = "study.journal"


def check_journal(path: Path) -> None:
    """Refuse a journal that Optuna cannot replay, before anything is appended to it: a folder, a file
    that is not a journal, or one cut off in the middle of a line (an interrupted write)."""
    if path.is_dir():
        raise PrunenasError(f"the study journal {str(path)!r} is a folder; remove it or pass another --out")
    if not path.exists():
        return
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise PrunenasError(
            f"cannot read the study journal {str(path)!r} ({exc.strerror}); pass another --out"
        ) from None
    if not blob:
        return
    lines = blob.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for i, line in enumerate(complete, start=1):
        try:
            entry = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            entry = None
        if not isinstance(entry, dict) or "op_code" not in entry:
            raise PrunenasError(
                f"{str(path)!r} is not an Optuna study journal (line {i} is not a journal entry); "
                "move it away or pass another --out"
            )
    if tail.strip():
        raise PrunenasError(
            f"the study journal {str(path)!r} ends in a line cut off by an interrupted write; keep a copy, drop that "
            f"line (`head -n {len(complete)} {path} > {path}.fixed && mv {path}.fixed {path}`) and rerun to resume"
        )


def check_scale_out(config: SearchConfig) -> None:
    """Refuse worker layouts that cannot work: GPUs that are not there, SQLite shared by processes."""
    if config.gpus:
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        missing = [g for g in config.gpus if int(g) >= have]
        if missing:
            raise PrunenasError(
                f"--gpus {','.join(config.gpus)}: this machine has {have} CUDA GPU(s), so GPU(s) {','.join(missing)} "
                "do not exist; list existing GPUs, or drop --gpus (--workers N runs N processes on the CPU)"
            )
    processes = config.search.workers * max(1, len(config.gpus) // max(1, config.search.gpus_per_trial))
    url = config.search.storage or ""
    if url.startswith("sqlite") and (processes > 1 or config.gpus):
        raise PrunenasError(
            f"--storage {url.split('?')[0]!r} with {processes} worker processes: SQLite does not take parallel "
            "writers (an in-memory one is not even shared); drop --storage to use the study folder's journal "
            "on one machine, or give a postgresql:// URL"
        )


def make_storage(config: SearchConfig) -> Any:
    """Optuna storage: a journal file in the study folder, or the --storage URL (PostgreSQL, ...)."""
    if config.search.storage:
        url = _with_driver(config.search.storage)
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=max(1, round(config.search.heartbeat)),
                grace_period=max(2, round(3 * config.search.heartbeat)),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
        except Exception as exc:
            raise PrunenasError(
                f"cannot open storage {_redact(url)!r} ({_first_line(exc)[:200]}); check the URL "
                "(e.g. postgresql://user:pass@host:5432/db) and that the server is reachable"
            ) from None
    from optuna.storages.journal import JournalFileBackend

    path = ensure_dir(config.out, "--out") / JOURNAL
    check_journal(path)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


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

    return hardware.pid_alive(pid)


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker process on this machine is gone as FAIL and queue them again
    (`requeue_failed`). Returns their numbers."""
    stale = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        if host is None or pid is None or _alive(str(host), int(pid)):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):
            continue  # another process got there first
        stale.append(t.number)
    return requeue_failed(study, stale) if stale else []


# -- retries ------------------------------------------------------------------------------------------------------
# One rule, whatever failed a trial (an error in it, Ctrl-C, a worker process that died): its genotype is queued
# again, and the retry resumes the run folder's last checkpoint. A session (one run_search, here or in a worker)
# retries a genotype once: a retry that fails in the session that queued it waits for the next run of the command,
# which retries every genotype whose last trial failed. So a seeded proposal is never lost, and a trial that
# fails every time costs one attempt per run instead of looping.
_SESSION = {"id": uuid.uuid4().hex}


def begin_session() -> str:
    """A new retry session (`run_search` starts one): the trials it queues again carry its id."""
    _SESSION["id"] = uuid.uuid4().hex
    return _SESSION["id"]


def retry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial's genotype again; its run folder makes the retry resume, not restart."""
    attrs = {k: v for k, v in t.user_attrs.items() if k in ("origin", "proposer", "target")}
    attrs["retry_of"] = int(t.user_attrs.get("retry_of", t.number))
    attrs["retry_session"] = _SESSION["id"]
    study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)


def requeue_failed(study: optuna.Study, numbers: Collection[int] | None = None) -> list[int]:
    """Queue again the failed trials among `numbers` (default: all) that the rule above retries: the last
    attempt of their genotype, not queued by this session, not a surplus trial (which never started), with
    their genes sampled, and of a genotype no other trial has finished. Returns their numbers."""
    trials = study.get_trials(deepcopy=False)
    last: dict[int, int] = {}
    for t in trials:
        root = int(t.user_attrs.get("retry_of", t.number))
        last[root] = max(last.get(root, -1), t.number)
    finished = {t.user_attrs.get("key") for t in trials if t.state in _DONE} - {None}
    retried = []
    for t in trials:
        if t.state != optuna.trial.TrialState.FAIL or (numbers is not None and t.number not in numbers):
            continue
        root = int(t.user_attrs.get("retry_of", t.number))
        if (
            last[root] != t.number
            or t.user_attrs.get("surplus")
            or not t.params
            or t.user_attrs.get("retry_session") == _SESSION["id"]
            or t.user_attrs.get("key") in finished
        ):
            continue
        retry(study, t)
        retried.append(t.number)
    return retried


_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def n_done(study: optuna.Study) -> int:
    """Finished architectures: trials of the same genotype (a sampler suggesting a trained one again, a
    retry) count once, so the study's --trials are distinct candidates."""
    return _counts(study)["done"]


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "waiting": 0, "attempts": 0}
    keys: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        if t.state in _DONE:
            counts["attempts"] += 1
            key = t.user_attrs.get("key")
            if key is None or key not in keys:
                counts["done"] += 1
            if key is not None:
                keys.add(key)
        elif t.state == optuna.trial.TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == optuna.trial.TrialState.WAITING:
            counts["waiting"] += 1
    return counts


#: A study stops after this many finished trials per --trials when its sampler keeps suggesting genotypes
#: it has trained already (a small space): trials of the same genotype count once.
MAX_ATTEMPTS = 4


def log_line(msg: str) -> None:
    print(f"prunenas: {msg}", file=sys.stderr, flush=True)


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
    deadline = time.monotonic() + config.search.timeout if config.search.timeout else None

    progress = make_progress(
        cap, "trials", unit="trial", initial=min(cap, n_done(study)), quiet=config.run.quiet or config.worker_only
    )

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            requeue_failed(study, [trial.number])  # a seeded proposal is never lost to a passing failure
        if progress is not None:
            done = min(cap, n_done(study))
            progress.set_done(done)
            progress.report(trial_line(done, cap, trial), trial_fields(trial))
        if on_trial is not None:
            on_trial(study, trial)

    try:
        while deadline is None or time.monotonic() < deadline:
            counts = _counts(study)
            if counts["done"] >= cap:
                break
            if counts["attempts"] >= MAX_ATTEMPTS * cap:  # the sampler keeps suggesting trained genotypes
                log_line(f"stopping at {counts['done']} distinct candidates after {counts['attempts']} trials")
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
        if not config.worker_only and not config.search.storage:  # alone on the study's journal
            requeue_orphans(study)
        raise
    finally:
        if progress is not None:
            progress.close()


def requeue_orphans(study: optuna.Study) -> list[int]:
    """Fail and queue again the RUNNING trials that no process owns: a trial is created by the sampler
    before its objective stamps it with its host and pid, so Ctrl-C in between leaves a RUNNING trial
    that no worker claims (and that a resume would wait for forever). Only safe when every process that
    could own one has stopped: a study in this machine's journal, after its workers exited."""
    orphans = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("pid") is not None:
            continue
        with contextlib.suppress(ValueError, RuntimeError):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            orphans.append(t.number)
    return requeue_failed(study, orphans) if orphans else []


def requeue_own_trials(study: optuna.Study) -> None:
    """After Ctrl-C: this process's interrupted trial is failed and queued again (`requeue_failed`, as any
    failed trial), so the next run of the same command resumes it from its run folder's last checkpoint."""
    me = (socket.gethostname(), os.getpid())
    with contextlib.suppress(Exception):
        own = [t for t in study.get_trials(deepcopy=False) if (t.user_attrs.get("host"), t.user_attrs.get("pid")) == me]
        for t in own:
            if t.state == optuna.trial.TrialState.RUNNING:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        requeue_failed(study, [t.number for t in own])


def worker_threads(config: SearchConfig) -> int:
    """CPU threads of each process this machine starts: its cores split evenly among them, decided here
    before they start. (Each process taking its share of the cores as it registers would race: the first to
    start would take every core before the others count, and a 2-core machine would run 3 threads: one
    trial measured 87 s instead of 13 s that way.)"""

    n = config.search.gpus_per_trial
    if n > 1:  # torchrun groups of n processes: one group, or one per n listed GPUs
        processes = (len(config.gpus) // n) * n if config.gpus else n
    else:
        processes = config.search.workers * max(1, len(config.gpus))
    return max(1, hardware.available_cores() // max(1, processes))


def worker_commands(config: SearchConfig) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of each worker process of this machine. The resolved configuration is
    written to the study folder as JSON and every worker reads it (nothing is parsed from argv)."""
    n = config.search.gpus_per_trial
    threads = config.run.threads or worker_threads(config)
    path = replace(config, worker_only=True, run=config.run.replace(quiet=True, threads=threads)).save(
        config.out / CONFIG_FILE
    )
    base = [sys.executable, "-m", "prunenas.search.worker", str(path)]
    if n > 1:  # one torchrun group per n GPUs (or n CPU processes): each trial trains data-parallel in it
        # torchrun's launcher, wrapped so that an interrupted group stops quietly (prunenas.search.worker)
        wrapped = ["-m", "prunenas.search.worker", "--torchrun"]
        launcher = [sys.executable, *wrapped, "--standalone", f"--nproc-per-node={n}"]
        group = [*launcher, "-m", "prunenas.search.worker", str(path)]
        if not config.gpus:
            return [(group, {})]
        gpus = list(config.gpus)
        return [(group, {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i : i + n])}) for i in range(0, len(gpus), n)]
    gpus = list(config.gpus) or [""]
    out = []
    for gpu in gpus:
        env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu else {}
        out += [(base, env)] * config.search.workers
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
    groups = f" of {config.search.gpus_per_trial} data-parallel processes" if config.search.gpus_per_trial > 1 else ""
    where = f" on GPUs {','.join(config.gpus)}" if config.gpus else ""
    log(f"starting {len(commands)} worker process{'es' if len(commands) > 1 else ''}{groups}{where}")
    procs = [subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL) for argv, env in commands]

    cap = config.budget.trials
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    reported = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    # distinct genotypes done, as n_done counts them (a duplicate trial does not move the count)
    genotypes = {t.user_attrs.get("key", t.number) for t in study.get_trials(deepcopy=False, states=finished)}
    progress = make_progress(cap, "trials", unit="trial", initial=min(cap, len(genotypes)), quiet=config.run.quiet)

    def show_finished() -> None:  # the workers' trials that finished since the last look, one line each
        if progress is None:
            return
        trials = study.get_trials(deepcopy=False, states=finished)
        for t in sorted((t for t in trials if t.number not in reported), key=lambda t: t.number):
            reported.add(t.number)
            genotypes.add(t.user_attrs.get("key", t.number))
            done = min(cap, len(genotypes))
            progress.set_done(done)
            progress.report(trial_line(done, cap, t), trial_fields(t))
        progress.set_done(min(cap, len(genotypes)))

    try:
        shown = time.monotonic()
        while any(p.poll() is None for p in procs):
            time.sleep(min(0.2, poll_s))  # notice the last worker's exit at once, then retrain the winners
            if time.monotonic() - shown >= poll_s:  # the study is read every poll_s only
                show_finished()
                shown = time.monotonic()
    except KeyboardInterrupt:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        if not config.search.storage and all(proc.poll() is not None for proc in procs):  # the journal's only users
            with contextlib.suppress(Exception):
                requeue_orphans(study)
        raise
    finally:
        if progress is not None:
            with contextlib.suppress(Exception):  # the storage may be what failed
                show_finished()
            progress.close()
    failed = [p.returncode for p in procs if p.returncode not in (0, None)]
    if failed:
        log(f"{len(failed)} worker(s) exited with codes {failed}; their trials were failed and queued again")
    if n_done(study) < config.budget.trials:
        log(f"the workers stopped at {n_done(study)}/{config.budget.trials} trials; finishing here")
        run_trials(study, objective, config, on_trial)
