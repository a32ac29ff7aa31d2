"""Distributed and fault-tolerant search with real processes and a real PostgreSQL server.

Each test runs `prunenas search` as separate processes on a tiny ResNet-8 and the embedded digits set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch

COMPLETE = optuna.trial.TrialState.COMPLETE
FAIL = optuna.trial.TrialState.FAIL
RUNNING = optuna.trial.TrialState.RUNNING


def search_argv(
    tmp_path: Path, space: Path, *extra: str, trials: int = 8, epochs: int = 1, subset: int = 96
) -> list[str]:
    return [
        sys.executable, "-m", "prunenas.cli", "search", "--space", str(space), "--dataset", "digits",
        "--budget", "smoke", "--trials", str(trials), "--proxy-epochs", str(epochs), "--train-subset", str(subset),
        "--val-size", "48", "--no-final", "--study", "dist", "--out", str(tmp_path / "study"), "--quiet", *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="dist", storage=url)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search exited ({proc.returncode}) before {what}: {proc.stderr.read()[-1500:]}")
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running_trial_with_checkpoint(
    study_dir: Path, trials: list[optuna.trial.FrozenTrial], max_epoch: int | None = None
):
    """A RUNNING trial whose run folder already holds an epoch checkpoint (so a kill is mid-trial)."""
    for t in trials:
        if t.state != RUNNING or "key" not in t.user_attrs:
            continue
        for run in (study_dir / "runs").glob(t.user_attrs["key"] + "-*"):
            ckpt = run / "checkpoint.pt"
            if ckpt.exists() and not (run / "metrics.json").exists():
                try:
                    epoch = torch.load(ckpt, weights_only=False)["epoch"]
                except Exception:
                    continue
                if epoch >= 1 and (max_epoch is None or epoch <= max_epoch):
                    return t
    return None


def test_two_workers_share_one_study(tmp_path, tiny_toml, pg_url):
    proc = subprocess.run(
        search_argv(tmp_path, tiny_toml, "--workers", "2", "--storage", pg_url, "--heartbeat", "2"),
        env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load(pg_url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == COMPLETE]
    # --trials counts distinct architectures: exactly 8, plus any duplicate suggestion (read from its cache)
    assert len({t.user_attrs["key"] for t in complete}) == 8 and len(complete) >= 8
    # both workers took part
    assert len({t.user_attrs["pid"] for t in complete}) == 2
    # every trial's genotype and metrics are stored
    for t in complete:
        assert t.user_attrs["genotype"]["space"] == "tiny_resnet8"
        assert 0.0 <= t.user_attrs["val_acc"] <= 1.0 and t.user_attrs["macs"] > 0
    # no genotype was trained twice: one trained (not cached) trial per distinct genotype
    keys = [t.user_attrs["key"] for t in complete]
    trained = [t for t in complete if not t.user_attrs["cached"]]
    assert len(trained) == len(set(keys))
    assert len({t.user_attrs["key"] for t in trained}) == len(trained)


def test_kill_9_of_a_worker_loses_nothing(tmp_path, tiny_toml, pg_url):
    # trials of 16 epochs on 320 images (a few seconds each here): the window in which a trial is running with an
    # epoch checkpoint must stay far wider than one poll even on a much faster machine (4 epochs on 160 images
    # left under half a second, and a CI run saw the search finish before a poll caught a trial mid-way)
    argv = search_argv(
        tmp_path, tiny_toml, "--workers", "2", "--storage", pg_url, "--heartbeat", "1", trials=6, epochs=16, subset=320
    )
    main = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = wait_for(
            lambda: _exists(pg_url) and running_trial_with_checkpoint(tmp_path / "study", load(pg_url).get_trials()),
            timeout=300, what="a running trial with a checkpoint", proc=main,
        )  # fmt: skip
        os.kill(int(victim.user_attrs["pid"]), signal.SIGKILL)
        _, err = main.communicate(timeout=600)
    finally:
        if main.poll() is None:
            main.kill()
    assert main.returncode == 0, err[-2000:]
    trials = load(pg_url).get_trials()
    assert len({t.user_attrs["key"] for t in trials if t.state == COMPLETE}) == 6  # distinct architectures
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == FAIL
    retries = [t for t in trials if _retry_of(t) == victim.number]
    assert len(retries) == 1 and retries[0].state == COMPLETE
    # the retry resumed from the killed trial's checkpoint instead of starting over
    assert retries[0].user_attrs["resumed_from_epoch"] >= 1
    assert retries[0].user_attrs["key"] == victim.user_attrs["key"]
    # nothing else was lost: every other trial completed
    others = [t for t in trials if t.number != victim.number and t.state != COMPLETE]
    assert all(t.user_attrs.get("surplus") for t in others)


def test_sigint_leaves_a_study_that_resumes(tmp_path, tiny_toml):
    argv = search_argv(tmp_path, tiny_toml, trials=4, epochs=12, subset=400)
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored; the search must
    # see Ctrl-C as a user's terminal delivers it, so its SIGINT disposition is reset to the default.
    proc = subprocess.Popen(
        argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    journal = tmp_path / "study" / "study.journal"
    storage = f"journal:{journal}"

    def study():
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return optuna.load_study(study_name="dist", storage=JournalStorage(JournalFileBackend(str(journal))))

    try:
        # a trial early in its 12 epochs, with another trial still to come: the search cannot finish (and
        # exit 0) before the signal lands
        victim = wait_for(
            lambda: journal.exists() and _loads(study) and sum(t.state == COMPLETE for t in study().get_trials()) < 3
            and running_trial_with_checkpoint(tmp_path / "study", study().get_trials(), max_epoch=6)
            if journal.exists() else None,
            timeout=300, what="a running trial early in its epochs", proc=proc,
        )  # fmt: skip
        done_before = {t.number: t.user_attrs.get("val_acc") for t in study().get_trials() if t.state == COMPLETE}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    del storage
    again = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = study().get_trials()
    assert len({t.user_attrs["key"] for t in trials if t.state == COMPLETE}) == 4  # distinct architectures
    # finished trials were kept as they were, the interrupted one resumed from its checkpoint
    for number, acc in done_before.items():
        assert trials[number].state == COMPLETE and trials[number].user_attrs["val_acc"] == acc
    retry = next(t for t in trials if _retry_of(t) == victim.number)
    assert retry.state == COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 1


def test_unreachable_database_is_one_clear_line(tmp_path, tiny_toml):
    proc = subprocess.run(
        search_argv(tmp_path, tiny_toml, "--storage", "postgresql://postgres@127.0.0.1:1/nothing"),
        env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: error: cannot open storage"), proc.stderr
    assert "reachable" in lines[0]


def test_database_lost_mid_run(tmp_path, tiny_toml, pg_server):
    url = pg_server.url
    argv = search_argv(tmp_path, tiny_toml, "--storage", url, "--heartbeat", "1", trials=8, epochs=6, subset=400)
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _exists(url) and sum(t.state == COMPLETE for t in load(url).get_trials()) >= 2,
                 timeout=300, what="two finished trials", proc=proc)  # fmt: skip
        finished = {t.number: t.user_attrs["val_acc"] for t in load(url).get_trials() if t.state == COMPLETE}
        pg_server.stop()
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-2000:]
    assert "lost the study storage" in err and "rerun the same command" in err
    assert "Traceback" not in err, err[-3000:]
    pg_server.restart()
    trials = load(url).get_trials()
    for number, acc in finished.items():
        assert trials[number].state == COMPLETE and trials[number].user_attrs["val_acc"] == acc


def _retry_of(t: optuna.trial.FrozenTrial) -> int | None:
    if "retry_of" in t.user_attrs:
        return int(t.user_attrs["retry_of"])
    if "failed_trial" in t.system_attrs:
        return int(t.system_attrs["failed_trial"])
    return None


def _exists(url: str) -> bool:
    try:
        return "dist" in [s.study_name for s in optuna.study.get_all_study_summaries(storage=url)]
    except Exception:
        return False


def _loads(study_fn) -> bool:
    try:
        study_fn()
        return True
    except Exception:
        return False


def test_summary_files_name_the_retry(tmp_path):
    """trials.json carries retry_of, so a person sees which trial replaced a failed one."""
    rows_path = tmp_path / "trials.json"
    from prunenas.search import trial_rows

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 1.0}, user_attrs={"retry_of": 3})
    study.optimize(lambda t: (t.suggest_float("x", 0, 2), 1.0), n_trials=1)
    rows = trial_rows(study)
    rows_path.write_text(json.dumps(rows))
    assert rows[0]["retry_of"] == 3
