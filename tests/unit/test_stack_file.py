"""The stack file `carecoord up` leaves in the data directory for the operator commands of a
second terminal: written whole and private, used only while its stack runs, never over the
environment."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.common import stack_file
from services.common.stack_file import StackInfo
from services.settings import Settings, get_settings

# When the stack of these tests started: today, taken once (only equality matters).
STARTED = datetime.now(UTC).isoformat()
APP_URL = "postgresql://carecoord_app:app-secret-pw@127.0.0.1:41477/postgres"
OWNER_URL = "postgresql://carecoord_owner:owner-secret-pw@127.0.0.1:41477/postgres"


def info(**changes: object) -> StackInfo:
    fields: dict[str, object] = {
        "pid": 4242,
        "data_dir": "/srv/data",
        "api_url": "http://127.0.0.1:18000",
        "kafka_bootstrap": "127.0.0.1:39092",
        "topic_prefix": "dev.",
        "database_url": APP_URL,
        "migrate_database_url": OWNER_URL,
        "started_at": STARTED,
        **changes,
    }
    return StackInfo(**fields)  # type: ignore[arg-type]


def running(_: StackInfo) -> str | None:
    return None


def stopped(_: StackInfo) -> str | None:
    return "its `carecoord up` (pid 4242) is not running"


def test_the_file_is_written_readable_by_its_owner_only_and_reads_back(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = stack_file.write(tmp_path, info())
    finally:
        os.umask(old)
    assert path == tmp_path / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack_file.read(tmp_path) == info()
    assert json.loads(path.read_text())["format"] == "carecoord-stack/1"


def test_a_rewrite_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    stack_file.write(tmp_path, info())
    first = (tmp_path / "stack.json").stat().st_ino
    stack_file.write(tmp_path, info(pid=5151))
    # Renamed over, not written in place: a reader holds the old file or the new one.
    assert (tmp_path / "stack.json").stat().st_ino != first
    assert stack_file.read(tmp_path) == info(pid=5151)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"]


def test_a_write_that_fails_keeps_the_old_file_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_file.write(tmp_path, info())

    def broken(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stack_file.os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        stack_file.write(tmp_path, info(pid=5151))
    assert stack_file.read(tmp_path) == info()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"]


def test_a_stack_removes_its_own_file_and_never_another_stacks(tmp_path: Path) -> None:
    stack_file.write(tmp_path, info(pid=5151))
    assert not stack_file.remove(tmp_path, 4242)
    assert stack_file.read(tmp_path) is not None
    assert stack_file.remove(tmp_path, 5151)
    assert stack_file.read(tmp_path) is None
    assert not stack_file.remove(tmp_path, 5151)


def test_settings_the_environment_leaves_unset_come_from_a_running_stacks_file(
    tmp_path: Path,
) -> None:
    stack_file.write(tmp_path, info())
    resolved = stack_file.resolve(Settings(data_dir=tmp_path), running=running)
    s = resolved.settings
    assert (s.database_url, s.migrate_database_url) == (APP_URL, OWNER_URL)
    assert (s.kafka_bootstrap, s.topic_prefix) == ("127.0.0.1:39092", "dev.")
    assert (s.api_host, s.api_port) == ("127.0.0.1", 18000)
    assert resolved.stale is None
    line = stack_file.describe(resolved)
    assert "127.0.0.1:41477 as carecoord_app" in line
    assert "secret-pw" not in line


def test_the_environment_wins_and_the_databases_two_urls_are_never_mixed(tmp_path: Path) -> None:
    stack_file.write(tmp_path, info())
    mine = "postgresql://me:pw@db.example.org/care"
    given = Settings(data_dir=tmp_path, database_url=mine, topic_prefix="t.", api_port=9000)
    resolved = stack_file.resolve(given, running=running)
    s = resolved.settings
    # The owner's URL of the stack names another server: not taken beside the given one.
    assert (s.database_url, s.migrate_database_url) == (mine, None)
    assert (s.kafka_bootstrap, s.topic_prefix) == ("127.0.0.1:39092", "t.")
    assert s.api_port == 9000
    assert set(resolved.used) == {"kafka_bootstrap"}


def test_a_stopped_stacks_file_is_not_used_and_the_error_names_the_fix(tmp_path: Path) -> None:
    stack_file.write(tmp_path, info())
    resolved = stack_file.resolve(Settings(data_dir=tmp_path), running=stopped)
    assert resolved.settings.database_url is None
    assert resolved.stale == "its `carecoord up` (pid 4242) is not running"
    # The real check: pid 4242 of the file is (almost surely) not this test's process,
    # and with a live pid nothing listens on a port just closed.
    gone = stack_file.not_running(info(), pid_alive=lambda _: False)
    assert gone == "its `carecoord up` (pid 4242) is not running"
    closed = stack_file.not_running(info(pid=os.getpid()), listening=lambda *_: False)
    assert closed == "nothing listens on its database port 127.0.0.1:41477"
    without_db = info(pid=os.getpid(), database_url=None, database_from_environment=True)
    api_down = stack_file.not_running(without_db, listening=lambda *_: False)
    assert api_down == "nothing listens on its API port 127.0.0.1:18000"
    assert stack_file.not_running(info(pid=os.getpid()), listening=lambda *_: True) is None


def test_the_missing_database_error_says_whether_a_stack_ran_and_what_to_do(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    none = stack_file.missing_database(settings)
    assert "no stack runs in" in none
    assert none.endswith("start the stack with `make up`, or set CARECOORD_DATABASE_URL")
    # Nothing listens on port 1 of loopback.
    stack_file.write(tmp_path, info(pid=os.getpid(), database_url="postgresql://a@127.0.0.1:1/x"))
    stale = stack_file.missing_database(settings)
    assert "is stale (nothing listens on its database port 127.0.0.1:1)" in stale
    assert stale.endswith("start the stack with `make up`, or set CARECOORD_DATABASE_URL")


def test_an_unreadable_file_is_named_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"format": "x", "database_url": "' + APP_URL + '"')
    resolved = stack_file.resolve(Settings(data_dir=tmp_path), running=running)
    assert resolved.settings.database_url is None
    assert resolved.stale is not None
    assert "is not a stack file" in resolved.stale
    assert "secret-pw" not in stack_file.missing_database(Settings(data_dir=tmp_path))


def test_an_operator_command_beside_a_stopped_stack_fails_with_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CARECOORD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CARECOORD_DATA_DIR", str(tmp_path))
    stack_file.write(tmp_path, info(pid=os.getpid(), database_url="postgresql://a@127.0.0.1:1/x"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["rebuild", "--check"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"carecoord: CARECOORD_DATABASE_URL is not set and the stack of {tmp_path}/stack.json "
        "is stale (nothing listens on its database port 127.0.0.1:1): start the stack with "
        "`make up`, or set CARECOORD_DATABASE_URL"
    ]
