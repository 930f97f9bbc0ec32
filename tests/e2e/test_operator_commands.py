"""The README's `carecoord` commands, as written, in a second terminal beside `carecoord up`:
no setting but CARECOORD_DATA_DIR, the stack found through its stack file."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from tests.e2e.conftest import Stack
from tests.readme import carecoord_commands

# Every command the README shows, in the order this test runs them (a command may need what
# an earlier one made: the demo's patient, the verifier key, a proof).
RUN = [
    ".venv/bin/carecoord token --sub u-1 --name 'Dr. Example'",
    ".venv/bin/carecoord token --sub dr-rivera --name 'Dr. Rivera'",
    ".venv/bin/carecoord demo",
    ".venv/bin/carecoord rebuild --check",
    ".venv/bin/carecoord audit verify",
    ".venv/bin/carecoord audit export --patient PATIENT_ID --format csv --out accesses.csv",
    ".venv/bin/carecoord migrate",
    ".venv/bin/carecoord export fhir --patient PATIENT_ID --out patient.json",
    ".venv/bin/carecoord audit public-key --vkey '>' carecoord.vkey",
    ".venv/bin/carecoord audit prove --entry 2:17 --out entry-2-17.json",
    ".venv/bin/carecoord audit prove --entry 2:17 --size 4096 --out entry-2-17-4096.json",
    ".venv/bin/carecoord audit prove --chain 2 --from 4096 --out chain-2.json",
    ".venv/bin/carecoord audit check-proof entry-2-17.json --vkey-file carecoord.vkey",
    ".venv/bin/carecoord audit check-proof chain-2.json --vkey-file carecoord.vkey "
    "--checkpoint kept-4096.note",
    ".venv/bin/carecoord audit witness --once",
    ".venv/bin/carecoord audit witness --every 30 --state /mnt/other-disk/witness.json "
    "--vkey-file carecoord.vkey",
    ".venv/bin/carecoord audit witness --api https://carecoord.example.org --token-file token "
    "--vkey-file carecoord.vkey --state witness.json --every 60",
]
# Shown in the README, not run here, and why.
NOT_RUN = {
    ".venv/bin/carecoord bench --json bench.json": "starts a stack of its own for minutes",
    ".venv/bin/carecoord bench --quick": "tests/e2e/test_bench.py runs it",
    ".venv/bin/carecoord bench --only audit --only pg": "starts a stack of its own",
    ".venv/bin/carecoord bench --repeat 1": "starts a stack of its own for minutes",
    ".venv/bin/carecoord bench --compare bench.json": "three full runs; the comparison is "
    "tested in tests/unit/test_bench_harness.py",
    ".venv/bin/carecoord bench --scale --json scale.json": "fills a store to a million events "
    "for minutes; tests/e2e/test_bench.py runs it --quick",
}
# The README's example values, and what they stand for on this stack.
PLACEHOLDERS = ("PATIENT_ID", "2:17", "4096", "https://carecoord.example.org")
USED_THE_STACK = "carecoord: using the stack `carecoord up` runs"


def test_the_list_of_commands_is_every_carecoord_command_the_readme_shows() -> None:
    shown = [shlex.join(argv) for argv in carecoord_commands()]
    assert sorted(shown) == sorted([*RUN, *NOT_RUN])


def test_every_readme_command_runs_as_written_beside_the_stack(
    stack: Stack, tmp_path: Path
) -> None:
    term = Terminal(stack, tmp_path)
    values: dict[str, str] = {"https://carecoord.example.org": stack.base_url}
    said: dict[str, subprocess.CompletedProcess[str]] = {}
    for command in RUN:
        argv = shlex.split(command)
        if "2:17" in argv and "2:17" not in values:
            values.update(signed_sizes(stack))
        if "--checkpoint" in argv:
            # The note of the older tree, as its holder kept it.
            kept = json.loads((tmp_path / "entry-2-17-4096.json").read_text())["checkpoint"]
            (tmp_path / "kept-4096.note").write_text(kept)
        if "--token-file" in argv:
            (tmp_path / "token").write_text(stack.token("co-ops", "Cora Ops", "compliance_officer"))
        if "--every" in argv:
            said[command] = term.run_a_while(argv, values)
            continue
        said[command] = done = term.run(argv, values)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if "demo" in argv:
            patient = re.search(r"^  patient\s+(\S+)", done.stdout, re.MULTILINE)
            assert patient is not None, done.stdout
            values["PATIENT_ID"] = patient.group(1)

    out = {command: done.stdout for command, done in said.items()}
    for token in (RUN[0], RUN[1]):
        assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", out[token])
    assert f"a fictional care team seeded on {stack.base_url}" in out[RUN[2]]
    assert "OK: the live boards match a rebuild" in out[RUN[3]]
    assert "OK: the audit log is intact" in out[RUN[4]]
    accesses = tmp_path / "accesses.csv"
    assert stat.S_IMODE(accesses.stat().st_mode) == 0o600
    assert accesses.read_text().startswith("entry,at,actor_id")
    assert values["PATIENT_ID"] in accesses.read_text()
    assert out[RUN[6]] == "0 migration(s) applied: none\n"
    assert json.loads((tmp_path / "patient.json").read_text())["resourceType"] == "Bundle"
    assert (tmp_path / "carecoord.vkey").read_text().startswith("carecoord.local/audit+")
    chain = values["2:17"].split(":")[0]
    assert out[RUN[12]].startswith(f"OK: entry {values['2:17']} is in the tree of")
    assert out[RUN[13]].startswith("OK:")
    assert out[RUN[14]].startswith("OK:")
    for command in RUN[15:]:
        assert '"event":"witness.' in said[command].stderr, said[command].stderr
        assert "witness.problem" not in said[command].stderr
    assert chain.isdigit()
    # Each command that needed the stack said where it found it, without a password.
    for command in RUN[2:8] + RUN[9:12]:
        assert USED_THE_STACK in said[command].stderr, (command, said[command].stderr)
    passwords = json.loads((stack.data_dir / "dev-db-passwords").read_text())
    for done in said.values():
        for secret in (passwords["owner"], passwords["app"]):
            assert secret not in done.stdout + done.stderr


def test_archiving_beside_the_stack_reaches_the_database_as_its_owner(
    stack: Stack, tmp_path: Path
) -> None:
    a_year_ago = datetime.now(UTC).replace(day=1).replace(year=datetime.now(UTC).year - 1)
    month = a_year_ago.strftime("%Y-%m")
    argv = ["carecoord", "audit", "archive", "--month", month, "--out", "archive"]
    done = Terminal(stack, tmp_path).run(argv, {})
    assert done.returncode == 2
    assert USED_THE_STACK in done.stderr
    assert "migrations as carecoord_owner" in done.stderr or stack.env.get("CARECOORD_DATABASE_URL")
    assert f"carecoord: the audit log holds no partition for {month}" in done.stderr


class Terminal:
    """A second terminal: CARECOORD_DATA_DIR and nothing else of the stack's settings (a
    database the stack was given by its environment is given here too, as the README says)."""

    def __init__(self, stack: Stack, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("CARECOORD_") or "_TEST_" in k
        }
        self.env["CARECOORD_DATA_DIR"] = str(stack.data_dir)
        if url := stack.env.get("CARECOORD_DATABASE_URL"):
            self.env["CARECOORD_DATABASE_URL"] = url

    def _argv(self, argv: list[str], values: dict[str, str]) -> tuple[list[str], Path | None]:
        argv = [values.get(word, word) for word in argv]
        if "--chain" in argv:
            at = argv.index("--chain") + 1
            argv[at] = values["2:17"].split(":")[0]
        argv = [w.replace("/mnt/other-disk/", "other-disk-") for w in argv]
        target = None
        if ">" in argv:
            target = self.cwd / argv[argv.index(">") + 1]
            argv = argv[: argv.index(">")]
        assert argv[0].endswith("carecoord")
        return [sys.executable, "-m", "services.cli", *argv[1:]], target

    def run(self, argv: list[str], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
        full, target = self._argv(argv, values)
        for _ in range(10):
            done = subprocess.run(
                full, env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=120
            )
            # The stack's own witness holds its state file while it looks (every 10 s).
            if "holds this state file's lock" not in done.stderr:
                break
            time.sleep(1)
        if target is not None:
            target.write_text(done.stdout)
        return done

    def run_a_while(
        self, argv: list[str], values: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        """A command that runs until stopped: its first round, then SIGTERM; exit 0."""
        full, _ = self._argv(argv, values)
        errors = self.cwd / "running.err"
        with errors.open("w") as stderr:
            proc = subprocess.Popen(
                full, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
            deadline = time.monotonic() + 60
            while '"event":"witness.' not in errors.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, errors.read_text()
                time.sleep(0.2)
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
        text = errors.read_text()
        assert proc.returncode == 0, f"{shlex.join(argv)}\n{text}"
        return subprocess.CompletedProcess(full, proc.returncode, out, text)


def signed_sizes(stack: Stack) -> dict[str, str]:
    """A chain with two signed checkpoints: its first entry stands for the README's `2:17`,
    the older signed size for `4096`."""

    async def query() -> tuple[int, int]:
        deadline = time.monotonic() + 60
        while True:
            conn = await asyncpg.connect(stack.database_url)
            try:
                row = await conn.fetchrow(
                    "SELECT chain, min(seq) AS older FROM audit_checkpoints GROUP BY chain "
                    "HAVING count(*) >= 2 ORDER BY count(*) DESC LIMIT 1"
                )
            finally:
                await conn.close()
            if row is not None:
                return int(row["chain"]), int(row["older"])
            assert time.monotonic() < deadline, "no chain has two signed checkpoints"
            await asyncio.sleep(0.5)

    chain, older = asyncio.run(query())
    return {"2:17": f"{chain}:1", "4096": str(older)}
