"""Kafka plumbing: producer and consumer factories, topic creation, and a reachability check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from services.settings import Settings

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


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (acks=all)."""
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotent_producer,
        "linger_ms": 2,
        "request_timeout_ms": 10_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap(settings),
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
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(settings), request_timeout_ms=10_000)
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
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap(settings), request_timeout_ms=int(seconds * 1000)
    )
    try:
        async with asyncio.timeout(seconds):
            await admin.start()
            await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    finally:
        await admin.close()
