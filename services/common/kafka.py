"""Kafka plumbing: how every client connects (TLS, SASL), producer and consumer factories,
topic creation, and a reachability check."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import ssl
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2

from services.common.log import get_logger
from services.settings import Settings

log = get_logger(__name__)

_TOPIC_ALREADY_EXISTS = 36

# Every message the relay produces carries its event-store position and event type, so
# consumers can apply each event once even when Kafka offsets restart from zero.
POSITION_HEADER = "carecoord-position"
TYPE_HEADER = "carecoord-type"


class BrokerUnavailable(RuntimeError):
    """The Kafka-protocol broker could not be reached or refused a request."""


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise BrokerUnavailable(
            "CARECOORD_KAFKA_BOOTSTRAP is not set (carecoord up sets it for its children)"
        )
    return settings.kafka_bootstrap


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (None for the plaintext protocols): the brokers'
    CA (the system's trust store when unset), the client certificate for mTLS, and the
    host name check. The Faust worker's credentials use the same context."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None

    def path(value: object) -> str | None:
        return str(value) if value else None

    context: ssl.SSLContext = create_ssl_context(
        cafile=path(settings.kafka_ssl_cafile),
        certfile=path(settings.kafka_ssl_certfile),
        keyfile=path(settings.kafka_ssl_keyfile),
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def security_options(settings: Settings) -> dict[str, object]:
    """aiokafka's keyword arguments for the configured protocol: every client's connection
    to the broker (producers, consumers, admin) is built from these."""
    warn_if_insecure(settings)
    protocol = settings.kafka_security_protocol
    options: dict[str, object] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        # Settings refuse a SASL protocol without both (a startup error).
        assert settings.kafka_sasl_username and settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return options


def client_options(settings: Settings) -> dict[str, object]:
    """Where the broker is and how to connect to it: what every client starts from."""
    return {"bootstrap_servers": bootstrap(settings), **security_options(settings)}


def security_warnings(settings: Settings) -> list[str]:
    """What is weak in the configured protocol when the broker is not on this machine."""
    if not settings.kafka_bootstrap or _loopback_only(settings.kafka_bootstrap):
        return []
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return [
            "the broker is reached over the network with PLAINTEXT: no authentication, "
            "so any client that reaches it can write care.events; use SASL_SSL"
        ]
    warnings = []
    if protocol == "SASL_PLAINTEXT":
        warnings.append(
            "SASL_PLAINTEXT over the network: messages (patient data) travel unencrypted; "
            "use SASL_SSL"
        )
        if settings.kafka_sasl_mechanism == "PLAIN":
            warnings.append(
                "SASL PLAIN without TLS sends the service's password in clear on every "
                "connection; use SASL_SSL, or SCRAM-SHA-512"
            )
    if protocol.endswith("SSL") and not settings.kafka_ssl_check_hostname:
        warnings.append(
            "CARECOORD_KAFKA_SSL_CHECK_HOSTNAME is off: any certificate the CA signed "
            "passes as the broker"
        )
    return warnings


_warned: set[str] = set()


def warn_if_insecure(settings: Settings) -> None:
    """Log each weakness of the broker connection once per process (clients are made
    again after every outage)."""
    for warning in security_warnings(settings):
        if warning not in _warned:
            _warned.add(warning)
            log.warning(
                "kafka.insecure_connection",
                protocol=settings.kafka_security_protocol,
                reason=warning,
            )


def _loopback_only(servers: str) -> bool:
    for server in servers.split(","):
        host = server.strip().rpartition(":")[0].strip("[]") or server.strip()
        if host.lower() == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:  # a host name: another machine, as far as we can tell
            return False
    return True


class KeyedPartitioner:
    """aiokafka's default partitioner (the Java client's: murmur2 of the key), with each
    key's hash remembered: a key (a team, a patient) is sent again and again, and the
    pure-Python murmur2 cost more than the rest of a send. Keyless messages go to a random
    partition, as before."""

    def __init__(self, remembered: int = 16_384) -> None:
        self._hash = functools.lru_cache(maxsize=remembered)(murmur2)
        self._keyless = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._keyless(key, all_partitions, available))
        return all_partitions[(int(self._hash(key)) & 0x7FFFFFFF) % len(all_partitions)]


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (acks=all)."""
    options: dict[str, object] = {
        **client_options(settings),
        "partitioner": KeyedPartitioner(),
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotent_producer,
        "linger_ms": 2,
        "request_timeout_ms": 10_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def started_producer(
    settings: Settings, topics: Iterable[str], **overrides: object
) -> AIOKafkaProducer:
    """A producer (make_producer) for these topics, made first if missing, and started; one
    that fails to start is stopped again, so no connection is left behind."""
    await ensure_topics(settings, list(topics))
    producer = make_producer(settings, **overrides)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


async def stop_quietly(producer: AIOKafkaProducer | None, seconds: float = 2) -> None:
    """Stop a producer that may already be broken, within `seconds`, whatever it says."""
    if producer is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), seconds)


def make_consumer(settings: Settings, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        **client_options(settings),
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "request_timeout_ms": 10_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(
    settings: Settings, names: Iterable[str] | None = None, *, partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    wanted = list(names) if names is not None else settings.all_topics
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        # With replicas, acks=all is durable only if a write must reach more than one of
        # them, and a replica that fell behind must never become leader.
        configs = (
            {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}
            if settings.topic_replication > 1
            else {}
        )
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    partitions or settings.topic_partitions,
                    settings.topic_replication,
                    topic_configs=configs,
                )
                for name in missing
            ]
        )
        for topic, code, message in _topic_errors(response):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerUnavailable(f"could not create topic {topic}: {message} ({code})")
        return missing
    except KafkaError as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except KeyError as exc:
        if not _scram(settings):
            raise
        raise _scram_refused(settings) from exc
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in errors]


async def partitions_for(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def ping(settings: Settings, seconds: float = 2.0) -> None:
    """Raise BrokerUnavailable unless the broker answers a metadata request in time."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(seconds * 1000))
    try:
        async with asyncio.timeout(seconds):
            await admin.start()
            await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    except KeyError as exc:
        if not _scram(settings):
            raise
        raise _scram_refused(settings) from exc
    finally:
        await admin.close()


def _scram(settings: Settings) -> bool:
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    return protocol.startswith("SASL_") and mechanism.startswith("SCRAM")


def _scram_refused(settings: Settings) -> BrokerUnavailable:
    # aiokafka 0.14 reads a SCRAM server-final message that reports an error (RFC 5802
    # 'e=unknown-user', 'e=invalid-proof'; Tansu sends these) as a KeyError.
    return BrokerUnavailable(
        f"SASL authentication refused (SCRAM {settings.kafka_sasl_mechanism}): "
        "check CARECOORD_KAFKA_SASL_USERNAME and CARECOORD_KAFKA_SASL_PASSWORD"
    )
