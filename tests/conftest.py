"""Shared fixtures: a real PostgreSQL server for the distributed-search tests.

CI (.ci/run) starts one and sets PRUNENAS_TEST_PG_URL (and PRUNENAS_REQUIRE_PG=1, so a missing server
fails instead of skipping). Elsewhere the fixture starts its own with .ci/postgres.sh when Debian's
PostgreSQL binaries are installed, and skips otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / ".ci" / "postgres.sh"


# A ResNet-8 (one block per stage) with shortcut B: seconds per trial on a CPU, for search tests.
TINY_RESNET8_TOML = """
extends = "resnet20_channels"
name = "tiny_resnet8"
[model]
depth = 8
shortcut = "B"
widths = [6, 8, 12]
[recipe]
batch_size = 32
"""


@pytest.fixture(scope="session", autouse=True)
def _cost_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Counted costs are cached on disk; the tests use a folder of their own, not the user's."""
    before = os.environ.get("PRUNENAS_COST_CACHE")
    os.environ["PRUNENAS_COST_CACHE"] = str(tmp_path_factory.mktemp("costs"))
    yield
    if before is None:
        os.environ.pop("PRUNENAS_COST_CACHE", None)
    else:
        os.environ["PRUNENAS_COST_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the tiny ResNet-8 space's TOML (space name "tiny_resnet8")."""
    path = tmp_path_factory.mktemp("tiny_space") / "tiny_resnet8.toml"
    path.write_text(TINY_RESNET8_TOML)
    return path


def _have_pg_binaries() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) if Path("/usr/lib/postgresql").is_dir() else False


def _unavailable(reason: str) -> None:
    if os.environ.get("PRUNENAS_REQUIRE_PG"):
        pytest.fail(f"PostgreSQL is required here but {reason}")
    pytest.skip(reason)


class PgServer:
    """A throwaway server in a temporary folder (stop/start it to simulate an outage)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.url = ""

    def start(self) -> str:
        out = subprocess.run(
            ["bash", str(PG_SCRIPT), "start", str(self.folder), str(self.port)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.url = out.stdout.strip().splitlines()[-1]
        return self.url

    def stop(self) -> None:
        subprocess.run(["bash", str(PG_SCRIPT), "stop", str(self.folder)], check=False, capture_output=True)

    def restart(self) -> None:
        """Start the same data folder again (after stop)."""
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        cmd = [
            str(bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"), "-w",
            "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off", "start",
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True)


def _new_database(base_url: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("PRUNENAS_TEST_PG_URL")
    if url:
        yield url
        return
    if not _have_pg_binaries() or shutil.which("bash") is None:
        _unavailable("no PostgreSQL server (set PRUNENAS_TEST_PG_URL or install Debian's postgresql)")
    # not under pytest's 0700 temp root: the server runs as the postgres user when we are root
    server = PgServer(Path(tempfile.mkdtemp(prefix="prunenas-pg-")), 55400 + os.getpid() % 90)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        _unavailable(f"PostgreSQL did not start: {exc.stderr.strip()[-300:]}")
    yield server.url
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_base_url: str) -> str:
    """A fresh, empty database on the shared test server."""
    pytest.importorskip("psycopg")
    return _new_database(pg_base_url)


@pytest.fixture
def pg_server() -> Iterator[PgServer]:
    """A dedicated server of this test's own (for outage tests)."""
    if not _have_pg_binaries():
        _unavailable("no PostgreSQL binaries to start a dedicated server")
    server = PgServer(Path(tempfile.mkdtemp(prefix="prunenas-pgown-")), 55500 + os.getpid() % 90)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def space(tiny_toml: Path):
    """The tiny ResNet-8 space (tests that take a `space` of their own override this)."""
    from prunenas.spaces import get_space

    return get_space(str(tiny_toml))


@pytest.fixture(scope="module")
def data():
    """64 training and 32 validation images of the embedded digits."""
    from prunenas.data import load_dataset

    return load_dataset("digits", seed=0, train_subset=64, val_size=32)
