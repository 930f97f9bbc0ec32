"""The running stack: `carecoord up` in a process of its own, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
import pytest

from services.common import embedded
from tests.e2e.chromium import browser  # noqa: F401 - the page tests' fixture

# The session's stack escalates an urgent signal task left in TODO after this long (the
# product's default is 30 minutes), looking every half second.
ESCALATE_AFTER_SECONDS = 3.0


@dataclass
class Stack:
    proc: subprocess.Popen[str]
    base_url: str
    data_dir: Path
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, seconds: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.output()[-4000:]}")

    def token(self, sub: str, name: str, *roles: str) -> str:
        argv = [sys.executable, "-m", "services.cli", "token", "--sub", sub, "--name", name]
        for role in roles:
            argv += ["--role", role]
        return subprocess.run(
            argv, env=self.env, check=True, capture_output=True, text=True
        ).stdout.strip()

    @property
    def kafka_bootstrap(self) -> str:
        if bootstrap := self.env.get("CARECOORD_KAFKA_BOOTSTRAP"):
            return bootstrap
        port = self.wait_for_line(r"Kafka\s+embedded Tansu broker, 127\.0\.0\.1:(\d+)").group(1)
        return f"127.0.0.1:{port}"

    @property
    def database_url(self) -> str:
        if url := self.env.get("CARECOORD_DATABASE_URL"):
            return url
        port = self.wait_for_line(r"PostgreSQL\s+embedded, 127\.0\.0\.1:(\d+)").group(1)
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start_stack(tmp: Path, extra_env: dict[str, str]) -> Stack:
    port = embedded.free_port()
    env = {
        **os.environ,
        "CARECOORD_DATA_DIR": str(tmp / "data"),
        "CARECOORD_API_PORT": str(port),
        "CARECOORD_LOG_FORMAT": "json",
        **extra_env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = Stack(proc=proc, base_url=f"http://127.0.0.1:{port}", data_dir=tmp / "data", env=env)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stack.lines.append(line.rstrip("\n"))

    stack.reader = threading.Thread(target=pump, daemon=True)
    stack.reader.start()
    return stack


def stop_stack(stack: Stack, seconds: float = 30) -> int:
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
    try:
        return stack.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        stack.proc.kill()
        raise
    finally:
        if stack.reader is not None:
            stack.reader.join(5)
        if stack.proc.stdout is not None:
            stack.proc.stdout.close()


def family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def parts(pid: int) -> dict[str, psutil.Process]:
    """The stack's `python -m services.cli <part>` processes by part, skipping any process
    that ends while this looks (PostgreSQL's backends come and go)."""
    found = {}
    for p in family(pid):
        try:
            argv = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        if argv[-2:-1] == ["services.cli"]:
            found[argv[-1]] = p
    return found


def _admin(sql: str) -> None:
    url = os.environ["CARECOORD_TEST_DATABASE_URL"]

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def external_services() -> Iterator[dict[str, str]]:
    """Point a stack at the test PostgreSQL/broker when the run was given them: a fresh
    database (dropped afterwards) and topics of its own."""
    env: dict[str, str] = {}
    database = None
    if url := os.environ.get("CARECOORD_TEST_DATABASE_URL"):
        database = f"carecoord_e2e_{uuid.uuid4().hex[:10]}"
        _admin(f'CREATE DATABASE "{database}"')
        env["CARECOORD_DATABASE_URL"] = urlunsplit(urlsplit(url)._replace(path=f"/{database}"))
    if bootstrap := os.environ.get("CARECOORD_TEST_KAFKA_BOOTSTRAP"):
        env["CARECOORD_KAFKA_BOOTSTRAP"] = bootstrap
        env["CARECOORD_TOPIC_PREFIX"] = f"e{uuid.uuid4().hex[:8]}."
    try:
        yield env
    finally:
        if database is not None:
            _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    with external_services() as env:
        env["CARECOORD_SIGNAL_ESCALATE_AFTER_SECONDS"] = str(ESCALATE_AFTER_SECONDS)
        env["CARECOORD_SIGNAL_CHECK_SECONDS"] = "0.5"
        s = start_stack(tmp, env)
        try:
            s.wait_for_line(r"carecoord is up", seconds=120)
            yield s
        finally:
            stop_stack(s)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=10) as c:
        yield c
