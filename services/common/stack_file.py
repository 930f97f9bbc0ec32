"""The stack file: where a running `carecoord up` listens, for the operator commands of a
second terminal.

`carecoord up` writes it into the data directory once the stack is healthy and removes it
when the stack stops. It holds the embedded server's URLs with their DEVELOPMENT passwords
(the ones already kept in dev-db-passwords), so it is written like that file: mode 0600
from the moment it exists, and whole (written aside, then renamed over), so a command never
reads half of it. A database the stack was given by its environment is not copied in: its
password is a real one, and stays where the operator put it.

An operator command fills a setting from it only when the environment does not set it, and
only while the stack that wrote it still runs (its supervisor is alive and something listens
on its database, or API, port): a file left by a killed stack gives a one-line error naming
the fix rather than a connection timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from services.settings import Settings

STACK_FILE = "stack.json"
FORMAT = "carecoord-stack/1"
FIX = "start the stack with `make up`, or set CARECOORD_DATABASE_URL"


class BadStackFile(Exception):
    """The stack file exists but cannot be used; the message says why (never its content)."""


@dataclass(frozen=True)
class StackInfo:
    pid: int
    data_dir: str
    api_url: str
    kafka_bootstrap: str
    topic_prefix: str = ""
    # The services' role and the schema owner's; None when the stack's database came from
    # its environment (database_from_environment), whose URLs are not copied here.
    database_url: str | None = None
    migrate_database_url: str | None = None
    database_from_environment: bool = False
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class Resolved:
    """Settings with what the environment left unset filled from a running stack's file."""

    settings: Settings
    path: Path
    # The settings taken from the file, by name (empty: nothing was).
    used: tuple[str, ...] = ()
    info: StackInfo | None = None
    # Why the file was not used although it exists (the stack stopped, or it is unreadable).
    stale: str | None = None


def stack_path(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def write(data_dir: Path, info: StackInfo) -> Path:
    """Write the stack file atomically, readable by its owner only."""
    path = stack_path(data_dir)
    body = {
        "format": FORMAT,
        "warning": "DEVELOPMENT connection settings of the running `carecoord up`; "
        "removed when it stops",
        **asdict(info),
    }
    # mkstemp creates the file 0600 (whatever the umask) under a name nobody else uses.
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{STACK_FILE}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(body, stream, indent=2)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def remove(data_dir: Path, pid: int) -> bool:
    """Remove the stack file if the stack of `pid` wrote it (another stack's stays)."""
    path = stack_path(data_dir)
    try:
        info = read(data_dir)
    except BadStackFile:
        return False
    if info is None or info.pid != pid:
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def read(data_dir: Path) -> StackInfo | None:
    """The stack file's content; None when there is none. Raises BadStackFile."""
    path = stack_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadStackFile(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
        if body.pop("format", None) != FORMAT:
            raise ValueError("not a carecoord stack file")
        body.pop("warning", None)
        info = StackInfo(**body)
        if not isinstance(info.pid, int) or not isinstance(info.kafka_bootstrap, str):
            raise ValueError("wrong field types")
    except (ValueError, TypeError, AttributeError):
        # The content is never echoed: it holds passwords.
        raise BadStackFile(f"{path} is not a stack file `carecoord up` wrote") from None
    return info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def not_running(
    info: StackInfo,
    *,
    pid_alive: Callable[[int], bool] = _pid_alive,
    listening: Callable[[str, int], bool] = _listening,
) -> str | None:
    """Why the stack the file names is not running, or None when it is."""
    if not pid_alive(info.pid):
        return f"its `carecoord up` (pid {info.pid}) is not running"
    url = info.database_url or info.api_url
    parts = urlsplit(url)
    what = "database" if info.database_url else "API"
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if host is None or port is None:
        return f"it names no {what} address"
    if not listening(host, port):
        return f"nothing listens on its {what} port {host}:{port}"
    return None


def resolve(
    settings: Settings,
    *,
    running: Callable[[StackInfo], str | None] = not_running,
) -> Resolved:
    """`settings` with what the environment did not set taken from the data directory's
    stack file, if the stack that wrote it runs. The environment always wins; the
    database's two URLs go together (one given, neither is taken: they must name the same
    server), as do the broker and, unless given, its topic prefix."""
    path = stack_path(settings.data_dir)
    try:
        info = read(settings.data_dir)
    except BadStackFile as exc:
        return Resolved(settings, path, stale=str(exc))
    if info is None:
        return Resolved(settings, path)
    why = running(info)
    if why is not None:
        return Resolved(settings, path, info=info, stale=why)
    given = settings.model_fields_set
    update: dict[str, object] = {}
    if not given & {"database_url", "migrate_database_url"} and info.database_url:
        update["database_url"] = info.database_url
        if info.migrate_database_url:
            update["migrate_database_url"] = info.migrate_database_url
    if "kafka_bootstrap" not in given:
        update["kafka_bootstrap"] = info.kafka_bootstrap
        if "topic_prefix" not in given:
            update["topic_prefix"] = info.topic_prefix
    if not given & {"api_host", "api_port"}:
        api = urlsplit(info.api_url)
        if api.hostname and api.port:
            update["api_host"], update["api_port"] = api.hostname, api.port
    # Only what differs counts as taken (a file's empty topic prefix is the default too).
    used = tuple(name for name, value in update.items() if getattr(settings, name) != value)
    return Resolved(settings.model_copy(update=update), path, used=used, info=info)


def describe(resolved: Resolved) -> str:
    """One line saying where the settings came from, without a secret."""
    if not resolved.used:
        return "settings from the environment"
    s = resolved.settings
    said = []
    if "database_url" in resolved.used and s.database_url:
        url = urlsplit(s.database_url)
        said.append(f"database {url.hostname}:{url.port} as {url.username}")
    if "migrate_database_url" in resolved.used and s.migrate_database_url:
        said.append(f"migrations as {urlsplit(s.migrate_database_url).username}")
    if "kafka_bootstrap" in resolved.used:
        said.append(f"Kafka {s.kafka_bootstrap}")
    if "api_port" in resolved.used:
        said.append(f"API http://{s.api_host}:{s.api_port}")
    pid = resolved.info.pid if resolved.info else "?"
    return f"using the stack `carecoord up` runs (pid {pid}, {resolved.path}): " + ", ".join(said)


def missing_database(settings: Settings) -> str:
    """What to say when no database URL is known: the stack file's state and the fix."""
    resolved = resolve(settings)
    if resolved.stale is not None:
        if resolved.info is None:
            return f"CARECOORD_DATABASE_URL is not set and {resolved.stale}: {FIX}"
        return (
            f"CARECOORD_DATABASE_URL is not set and the stack of {resolved.path} is stale "
            f"({resolved.stale}): {FIX}"
        )
    if resolved.info is not None and resolved.info.database_from_environment:
        return (
            "CARECOORD_DATABASE_URL is not set: the running stack's database was given by its "
            "environment (CARECOORD_DATABASE_URL), which is not copied to its stack file: set "
            "it here too"
        )
    return (
        "CARECOORD_DATABASE_URL is not set and no stack runs in "
        f"{settings.data_dir.resolve()} (no {STACK_FILE}): {FIX}"
    )
