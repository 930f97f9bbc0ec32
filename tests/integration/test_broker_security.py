"""Broker authentication against a real Kafka-protocol broker.

The embedded Tansu 0.6 broker implements SASL/SCRAM behind `--authentication` but no way to
provision a user on its memory storage (`tansu user create` connects unauthenticated, which
that broker refuses), and it accepts `--cert`/`--key` without ever speaking TLS. So: its
refusals are tested here against it; TLS (and mTLS) through a TLS front that hands the
bytes to it, the way a TLS-terminating load balancer would."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schemas import codec
from services.common import embedded, kafka
from services.common.event_store import EventStore
from services.settings import Settings
from tests import tls
from tests.conftest import _wait_for_port, wait_until
from tests.factories import goal_added
from tests.integration.workers import Workers


def _tansu(
    log_file: Path, *extra: str, advertised: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = embedded.free_port()
    spec = embedded.tansu_spec(port, log_file=log_file)
    argv = list(spec.argv)
    if advertised is not None:
        at = argv.index("--advertised-listener-url") + 1
        argv[at] = f"tcp://127.0.0.1:{advertised}"
    proc = embedded.spawn(dataclasses.replace(spec, argv=[*argv, *extra]))
    _wait_for_port(port, proc, "the Tansu broker")
    return proc, port


@contextlib.contextmanager
def _running(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        embedded.stop(proc, embedded.tansu_spec(0).stop_signal)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_front(port: int, backend: int, material: tls.Material) -> AsyncIterator[None]:
    """TLS on port, requiring a client certificate the test CA signed; plaintext to backend."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(material.ca))
    context.load_cert_chain(material.server_cert, material.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            writer.close()
            return
        both = {
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        }
        tasks.update(both)
        await asyncio.gather(*both, return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    try:
        yield
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def refused(settings: Settings) -> str:
    with pytest.raises(kafka.BrokerUnavailable) as caught:
        await kafka.ping(settings, seconds=5)
    return str(caught.value)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tls.Material:
    return tls.make(tmp_path_factory.mktemp("tls"))


async def test_a_broker_that_requires_authentication_refuses_clients_without_valid_credentials(
    tmp_path: Path,
) -> None:
    proc, port = _tansu(tmp_path / "tansu.log", "--authentication")
    with _running(proc):
        base = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
        # No credentials at all.
        await refused(base)
        sasl: dict[str, Any] = {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_username": "carecoord-relay",
            "kafka_sasl_password": "not-the-password",
        }
        # PLAIN: the broker offers SCRAM only.
        await refused(
            Settings(kafka_bootstrap=base.kafka_bootstrap, kafka_sasl_mechanism="PLAIN", **sasl)
        )
        # SCRAM for a principal the broker does not know: refused, and said so clearly.
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            message = await refused(
                Settings(
                    kafka_bootstrap=f"127.0.0.1:{port}", kafka_sasl_mechanism=mechanism, **sasl
                )
            )
            assert "SASL authentication refused" in message
            assert "not-the-password" not in message
        # Creating topics (the relay, the audit sink) is refused the same way.
        with pytest.raises(kafka.BrokerUnavailable, match="SASL authentication refused"):
            await kafka.ensure_topics(
                Settings(kafka_bootstrap=f"127.0.0.1:{port}", **sasl), ["care.events"]
            )
    log = (tmp_path / "tansu.log").read_text(errors="replace")
    assert "NotAuthenticated" in log and "NoSharedMechanism" in log


async def test_clients_reach_the_broker_over_mutual_tls_and_are_refused_without_it(
    tmp_path: Path, material: tls.Material
) -> None:
    front = embedded.free_port()
    # The broker advertises the TLS front, so every connection after bootstrap goes there.
    proc, backend = _tansu(tmp_path / "tansu.log", advertised=front)
    with _running(proc):
        async with tls_front(front, backend, material):
            values: dict[str, Any] = {
                "kafka_bootstrap": f"127.0.0.1:{front}",
                "kafka_security_protocol": "SSL",
                "kafka_ssl_cafile": material.ca,
                "kafka_ssl_certfile": material.client_cert,
                "kafka_ssl_keyfile": material.client_key,
                "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
                "topic_partitions": 1,
            }
            good = Settings(**values)
            topic = good.topic("tls-check")
            await kafka.ensure_topics(good, [topic])
            producer = kafka.make_producer(good)
            await producer.start()
            try:
                await producer.send_and_wait(topic, b"over tls", key=b"k")
            finally:
                await producer.stop()
            consumer = kafka.make_consumer(good, topic)
            await consumer.start()
            try:
                message = await asyncio.wait_for(consumer.getone(), 30)
            finally:
                await consumer.stop()
            assert message.value == b"over tls"

            # Plaintext to a TLS listener.
            await refused(Settings(kafka_bootstrap=f"127.0.0.1:{front}"))
            # TLS, but no client certificate.
            await refused(
                Settings(**values | {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None})
            )
            # A client that trusts another CA does not accept the broker's certificate.
            other = tls.make(tmp_path / "other", ca_name="another CA")
            await refused(Settings(**values | {"kafka_ssl_cafile": other.ca}))
            # The certificate names 127.0.0.1, not localhost.
            await refused(Settings(**values | {"kafka_bootstrap": f"localhost:{front}"}))


async def test_the_faust_worker_consumes_and_applies_events_over_mutual_tls(
    tmp_path: Path,
    material: tls.Material,
    settings: Settings,
    pool: asyncpg.Pool[Any],
    workers: Workers,
) -> None:
    front = embedded.free_port()
    proc, backend = _tansu(tmp_path / "tansu.log", advertised=front)
    files = {
        "kafka_ssl_cafile": material.ca,
        "kafka_ssl_certfile": material.client_cert,
        "kafka_ssl_keyfile": material.client_key,
    }
    secured = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{front}", "kafka_security_protocol": "SSL"} | files
    )
    with _running(proc):
        async with tls_front(front, backend, material):
            await kafka.ensure_topics(secured)
            worker = workers.start(
                secured,
                CARECOORD_KAFKA_SECURITY_PROTOCOL="SSL",
                **{f"CARECOORD_{name.upper()}": str(path) for name, path in files.items()},
            )
            team = f"team-{uuid.uuid4().hex[:6]}"
            [recorded] = await EventStore(pool).append(
                f"plan-{team}", 0, [goal_added(f"plan-{team}", team_id=team, description="g")]
            )
            producer = kafka.make_producer(secured)
            await producer.start()
            try:
                await producer.send_and_wait(
                    secured.events_topic,
                    codec.encode(recorded.envelope),
                    key=team.encode(),
                    headers=[(kafka.POSITION_HEADER, str(recorded.position).encode())],
                )
            finally:
                await producer.stop()

            async def applied() -> bool:
                worker.assert_alive()
                value = await pool.fetchval(
                    "SELECT events_applied FROM team_activity WHERE team_id = $1", team
                )
                return bool(value)

            await wait_until(applied, seconds=90, what="the worker to apply the event over TLS")
            worker.stop()
