"""The runtime around the commands: torchrun's environment checked before anything starts, one orderly
shutdown however many signals arrive, and progress lines that say what happened (issue 32, causes 4 and 8,
WORLD_SIZE=0 of cause 1, and the search's progress lines).

The signal tests run real processes and wait for a line or a file they write, never for a fixed time."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from tiny_search import tiny_search_config

from prunenas import distributed
from prunenas.cli import main
from prunenas.errors import PrunenasError
from prunenas.search import SearchConfig, make_storage, run_search


def one_line_error(code: int, err: str, out: str = "") -> str:
    """The contract of bad input: exit 2, one line on stderr, no traceback; returns that line."""
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prunenas: error:"), lines[0]
    return lines[0]


# -- cause 4 and WORLD_SIZE=0: torchrun's environment ------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No torchrun variables from the environment the tests run in."""
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


BAD_ENVIRONMENTS = [
    # (id, environment, the variable the line must name, the value it must show)
    ("WORLD_SIZE=0", {"WORLD_SIZE": "0"}, "WORLD_SIZE", "'0'"),
    ("negative WORLD_SIZE", {"WORLD_SIZE": "-2"}, "WORLD_SIZE", "'-2'"),
    ("WORLD_SIZE not a number", {"WORLD_SIZE": "two"}, "WORLD_SIZE", "'two'"),
    ("WORLD_SIZE a float", {"WORLD_SIZE": "2.0"}, "WORLD_SIZE", "'2.0'"),
    ("RANK missing", {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "RANK", "WORLD_SIZE=2"),
    ("MASTER_ADDR missing", {"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "29500"}, "MASTER_ADDR", "WORLD_SIZE=2"),
    (
        "MASTER_PORT missing",
        {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1"},
        "MASTER_PORT",
        "WORLD_SIZE=2",
    ),
    (
        "RANK not below WORLD_SIZE",
        {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
        "RANK",
        "RANK=2",
    ),
    ("RANK without WORLD_SIZE", {"RANK": "1"}, "RANK", "RANK=1"),
    ("negative RANK", {"WORLD_SIZE": "2", "RANK": "-1"}, "RANK", "'-1'"),
    ("LOCAL_RANK not a number", {"LOCAL_RANK": "gpu0"}, "LOCAL_RANK", "'gpu0'"),
    (
        "LOCAL_RANK not below LOCAL_WORLD_SIZE",
        {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": "29500"},
        "LOCAL_RANK",
        "LOCAL_RANK=2",
    ),
    ("LOCAL_WORLD_SIZE above WORLD_SIZE", {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "3"}, "LOCAL_WORLD_SIZE", "=3"),
    ("MASTER_PORT 0", {"MASTER_PORT": "0"}, "MASTER_PORT", "'0'"),
    ("MASTER_PORT too large", {"MASTER_PORT": "70000"}, "MASTER_PORT", "'70000'"),
    ("MASTER_PORT not a number", {"MASTER_PORT": "http"}, "MASTER_PORT", "'http'"),
    ("MASTER_ADDR with a space", {"MASTER_ADDR": "node 1"}, "MASTER_ADDR", "'node 1'"),
]


@pytest.mark.parametrize(
    ("env", "variable", "shown"), [c[1:] for c in BAD_ENVIRONMENTS], ids=[c[0] for c in BAD_ENVIRONMENTS]
)
def test_a_bad_torchrun_environment_is_one_line_naming_the_variable(clean_env, capsys, env, variable, shown):
    """Checked before any command starts its work, whatever the command (here one that never trains)."""
    for name, value in env.items():
        clean_env.setenv(name, value)
    code = main(["cost", "resnet20_channels"])
    captured = capsys.readouterr()
    line = one_line_error(code, captured.err, captured.out)
    assert f"environment variable {variable}" in line or f"{variable} is not set" in line, line
    assert shown in line, line
    assert "torchrun" in line  # what sets them


def test_the_python_api_raises_the_projects_error_naming_the_variable(clean_env):
    clean_env.setenv("WORLD_SIZE", "0")
    with pytest.raises(PrunenasError, match="WORLD_SIZE='0'"):
        distributed.world()
    clean_env.setenv("WORLD_SIZE", "3")
    clean_env.setenv("RANK", "3")
    with pytest.raises(PrunenasError, match="RANK=3 is not below WORLD_SIZE"):
        distributed.world()


def test_a_consistent_environment_is_accepted(clean_env):
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        clean_env.setenv(name, value)
    assert distributed.world() == distributed.World()
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("RANK", "3")
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    clean_env.setenv("MASTER_ADDR", "localhost")
    clean_env.setenv("MASTER_PORT", "29500")
    w = distributed.world()
    assert (w.rank, w.size, w.local_rank, w.parallel, w.main) == (3, 4, 1, True, False)
    clean_env.setenv("WORLD_SIZE", "")  # empty counts as unset: one process, and RANK 3 is then out of range
    with pytest.raises(PrunenasError, match="RANK=3"):
        distributed.world()


def _train_argv(out: Path, epochs: int = 1, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "prunenas.cli", "train", "resnet20_channels", "--dataset", "digits",
        "--train-subset", "64", "--epochs", str(epochs), "--out", str(out), *extra,
    ]  # fmt: skip


def _run_rank(env: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
    full.update({"OMP_NUM_THREADS": "1", **env})
    # torch would wait for the rendezvous until its timeout (30 minutes): a wait of minutes is a failure here
    return subprocess.run(_train_argv(out, 1, "--quiet"), env=full, capture_output=True, text=True, timeout=240)


def test_a_master_addr_that_does_not_resolve_is_one_line_not_a_wait(tmp_path):
    env = {
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "no-such-host.invalid",
        "MASTER_PORT": "29517",
    }
    proc = _run_rank(env, tmp_path / "run")
    line = one_line_error(proc.returncode, proc.stderr, proc.stdout)
    assert "MASTER_ADDR='no-such-host.invalid'" in line and "does not resolve" in line


def test_a_master_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        proc = _run_rank(env, tmp_path / "run")
    line = one_line_error(proc.returncode, proc.stderr, proc.stdout)
    assert f"MASTER_PORT={port}" in line and "MASTER_ADDR=127.0.0.1" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -- cause 8: signals, once or many times -------------------------------------------------------------------------
def _signal_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PRUNENAS_PROGRESS": "lines"}


def _default_sigint() -> None:
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored (and a process keeps
    # ignoring it, as it should): give the command the disposition a user's terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the command exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigterm_and_more_signals_stop_a_training_run_in_order(tmp_path):
    """SIGTERM (a process manager, `kill`) is a shutdown like Ctrl-C: the epochs done stay in the run folder,
    one line, exit 130, and the signals that follow change nothing."""
    out = tmp_path / "run"
    err_path = tmp_path / "err.txt"
    argv = _train_argv(out, 100_000)  # runs until stopped
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            argv, env=_signal_env(), stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_default_sigint
        )
    try:
        _wait_for((out / "checkpoint.pt").exists, proc, "the first epoch's checkpoint")  # written atomically
        proc.send_signal(signal.SIGTERM)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            if proc.poll() is None:
                proc.send_signal(sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err_text = err_path.read_text()
    assert code == 130, err_text[-2000:]
    assert "Traceback" not in err_text
    notes = [line for line in err_text.splitlines() if not re.search(r": epoch \d+/", line)]
    # one line; the signals were all pending when Python handled the first, so it may name SIGINT's
    assert len(notes) == 1 and re.fullmatch(r"prunenas: interrupted( \(SIGTERM\))?", notes[0]), err_text[-2000:]
    assert (out / "checkpoint.pt").exists()  # the finished epochs are kept


SCRIPT = """
import atexit, os, signal, sys, time
from pathlib import Path
import prunenas.cli.commands as commands
from prunenas.cli import main

marks = Path(sys.argv[1])

def hammer():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        os.kill(os.getpid(), sig)
        for _ in range(20):  # Python runs signal handlers between bytecodes: give them every chance
            time.sleep(0.005)

def at_exit():  # torch's atexit hooks run here too: Ctrl-C while they run
    hammer()
    (marks / "atexit-finished").touch()

atexit.register(at_exit)

def interrupted_command(args):
    try:
        (marks / "started").touch()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the command works
        time.sleep(60)
    except KeyboardInterrupt:
        hammer()  # and again, while its clean-up runs
        import xml.dom.minidom  # noqa: F401  (a lazy import in an except clause)
        (marks / "cleanup-finished").touch()
        raise

commands.cmd_proposers = interrupted_command
sys.argv = ["prunenas", "proposers"]
sys.exit(main())
"""


def test_signals_during_clean_up_and_exit_hooks_change_nothing(tmp_path):
    """The second, third, ... signal neither cuts the clean-up of the first short nor breaks the exit hooks:
    the clean-up finishes, one line, exit 130, no traceback."""
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=_signal_env(), capture_output=True, text=True,
        timeout=120, preexec_fn=_default_sigint,
    )  # fmt: skip
    assert (tmp_path / "started").exists(), proc.stderr
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["prunenas: interrupted"], proc.stderr
    assert (tmp_path / "cleanup-finished").exists()
    assert (tmp_path / "atexit-finished").exists()


@pytest.mark.parametrize("workers", [["--workers", "2"], ["--gpus-per-trial", "2"]], ids=["workers", "torchrun-group"])
def test_ctrl_c_of_a_search_with_workers_is_one_line_from_the_parent(tmp_path, tiny_toml, workers):
    """Ctrl-C reaches the whole process group (parent and workers, or a trial group's torchrun launcher), the
    parent forwards one more to each, and the user presses it again: one "interrupted" line, exit 130, no
    trial left running."""
    study_dir = tmp_path / "study"
    argv = [
        sys.executable, "-m", "prunenas.cli", "search", "--space", str(tiny_toml), "--dataset", "digits",
        "--budget", "smoke", "--trials", "40", "--proxy-epochs", "3", "--train-subset", "200", "--val-size", "48",
        "--no-final", "--study", "w", "--out", str(study_dir), *workers,
    ]  # fmt: skip
    err_path = tmp_path / "err.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            argv, env=_signal_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            preexec_fn=_default_sigint,
        )  # fmt: skip
    try:
        _wait_for(lambda: " done" in err_path.read_text(), proc, "the first finished trial")
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the group
        os.kill(proc.pid, signal.SIGINT)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err_text = err_path.read_text()
    assert code == 130, err_text[-3000:]
    assert "Traceback" not in err_text
    assert [line for line in err_text.splitlines() if "interrupted" in line] == ["prunenas: interrupted"], err_text
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(study_dir / "study.journal")))
    trials = optuna.load_study(study_name="w", storage=storage).get_trials()
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]  # failed and queued again


# -- progress lines that say what happened -------------------------------------------------------------------------
def config_for(tmp_path: Path, space, **changes) -> SearchConfig:
    return tiny_search_config(tmp_path, space, "p", **{"quiet": False, "export": False, **changes})


def test_a_duplicate_trial_says_so_instead_of_repeating_a_count(tmp_path, space, data, capsys, monkeypatch):
    monkeypatch.setenv("PRUNENAS_PROGRESS", "lines")
    config = config_for(tmp_path, space)
    study = optuna.create_study(study_name="p", storage=make_storage(config), directions=["maximize", "minimize"])
    genes = dict(space.reference().genes)
    for _ in range(2):  # the same architecture twice: the second trial reuses the first one's run
        study.enqueue_trial(genes)
    run_search(config, space, data, log=lambda m: None)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    duplicates = [line for line in lines if "duplicate" in line]
    assert len(duplicates) == 1, lines
    assert re.match(r"trial #1 sampled: duplicate of trial #0, reused, .*\(1/2 done\)$", duplicates[0]), duplicates
    counts = [m.group(1) for line in lines if (m := re.match(r"trial (\d+/\d+) done:", line))]
    assert counts == ["1/2", "2/2"], lines  # each count once
    rows = json.loads((config.out / "trials.json").read_text())
    assert sum(1 for r in rows if r["cached"]) == 1


def test_a_finished_final_run_is_reused_and_says_so(tmp_path, space, data, capsys, monkeypatch):
    monkeypatch.setenv("PRUNENAS_PROGRESS", "lines")
    config = config_for(tmp_path, space, final=True)
    first: list[str] = []
    run_search(config, space, data, log=first.append)
    assert any("retraining with scratch-e for 1 epochs" in m for m in first), first
    capsys.readouterr()
    again: list[str] = []
    run_search(config, space, data, log=again.append)
    err = capsys.readouterr().err
    winner = [m for m in again if m.startswith("winner ")]
    assert len(winner) == 1 and winner[0].endswith("already retrained with scratch-e for 1 epochs, reused"), again
    assert "resuming after epoch" not in err and "already trained (1/1 epochs), reused" in err, err


def test_a_trial_no_process_owns_is_failed_and_queued_again(tmp_path):
    """Ctrl-C between the sampler creating a trial and its objective stamping host and pid leaves a RUNNING
    trial no worker claims; once every process of the study has stopped it is failed and its genotype queued
    again, while a trial that names its process is left to that process."""
    from prunenas.search.storage import requeue_orphans

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(study_name="o", storage=storage)
    orphan = study.ask()
    orphan.suggest_int("stage1_width", 4, 16)  # sampled, then interrupted before the objective ran
    owned = study.ask()
    owned.suggest_int("stage1_width", 4, 16)
    owned.set_user_attr("host", socket.gethostname())
    owned.set_user_attr("pid", os.getpid())
    assert requeue_orphans(study) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert states[owned.number] == optuna.trial.TrialState.RUNNING
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs.get("retry_of") == orphan.number
