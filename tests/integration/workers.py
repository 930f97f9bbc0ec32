"""The worker (or another part: the relay, the API) as its own process, for integration
tests: started, paused, killed, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from services.audit import keys as audit_keys
from services.common.dev_secrets import pipeline_keys
from services.settings import Settings


def environment(settings: Settings) -> dict[str, str]:
    """This process's environment, pointed at the test's database, broker and data (with
    development audit keys there, made as `carecoord up` makes them: a worker never does)."""
    audit_keys.load(settings, create=True)
    pipeline_keys(settings, create=True)
    return {
        **os.environ,
        "CARECOORD_DATABASE_URL": settings.database_url or "",
        "CARECOORD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "CARECOORD_TOPIC_PREFIX": settings.topic_prefix,
        "CARECOORD_DATA_DIR": str(settings.data_dir),
    }


@dataclass
class Worker:
    """A `carecoord worker` process, its output kept in a file to show when it fails."""

    proc: subprocess.Popen[bytes]
    log: Path

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.log.stem} exited with code {self.proc.returncode}; its log ends:\n"
                + self.tail()
            )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: as an overloaded or GC-stalled process, it does nothing until resumed."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a paused process would not handle SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Workers:
    """Starts workers for a test and stops whatever is still running at its end."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self.started: list[Worker] = []

    def start(self, settings: Settings, *, part: str = "worker", **env: str) -> Worker:
        """`carecoord <part>` (worker, relay, api) on the test's database and broker."""
        log = self._logs / f"{part}-{len(self.started) + 1}.log"
        environ = {
            **environment(settings),
            "CARECOORD_LOG_LEVEL": "info",
            "CARECOORD_LOG_FORMAT": "json",
            **env,
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", part],
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
