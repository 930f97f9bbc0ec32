"""Access records packed for care.audit: the relay groups a key's due records into
messages, and the codec reads a pack or a lone record alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from schemas import codec
from schemas.audit import PACKED_MAX, AccessRecorded
from schemas.errors import InvalidEvent
from services.audit import relay
from services.audit.outbox import Queued
from tests.factories import access_recorded

AT = datetime(2026, 11, 22, 9, tzinfo=UTC)


def access(n: int) -> AccessRecorded:
    return access_recorded(n, at=AT, patient_id="patient-1")


def row(key: str, size: int = 10) -> Queued:
    return Queued(str(uuid.uuid4()), key.encode(), b"x" * size, AT)


def test_a_pack_reads_back_as_its_records_in_order() -> None:
    records = [access(n) for n in range(5)]
    pack = codec.pack_access([codec.encode_access(r) for r in records])
    assert codec.decode_access_records(pack) == records
    assert orjson.loads(pack)["schema_version"] == 1


def test_a_lone_record_reads_as_a_list_of_one() -> None:
    record = access(1)
    assert codec.decode_access_records(codec.encode_access(record)) == [record]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b'{"schema_version":1,"records":[]}', "records"),
        (codec.pack_access([b'{"record_id":"r"}']), "records.0.at"),
        (b'{"schema_version":1,"records":[],"extra":1}', "records"),
    ],
)
def test_a_bad_pack_is_refused_naming_the_field(value: bytes, field: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        codec.decode_access_records(value)
    assert refused.value.field == field


def test_a_pack_holds_at_most_its_maximum() -> None:
    encoded = codec.encode_access(access(1))
    with pytest.raises(InvalidEvent):
        codec.decode_access_records(codec.pack_access([encoded] * (PACKED_MAX + 1)))


def test_the_relay_packs_each_keys_rows_together_in_queued_order() -> None:
    rows = [row("a"), row("b"), row("a"), row("c"), row("a"), row("b")]
    packs = relay.packed(rows)
    assert [[r.key for r in p] for p in packs] == [[b"a"] * 3, [b"b"] * 2, [b"c"]]
    assert [r for p in packs for r in p if r.key == b"a"] == [rows[0], rows[2], rows[4]]


def test_a_pack_is_closed_at_its_count_or_size() -> None:
    many = [row("a") for _ in range(PACKED_MAX + 1)]
    assert [len(p) for p in relay.packed(many)] == [PACKED_MAX, 1]
    big = relay.PACK_BYTES // 2 + 1
    large = [row("a", big), row("a", big), row("a", 10)]
    assert [len(p) for p in relay.packed(large)] == [1, 2]
    alone = [row("a", relay.PACK_BYTES + 1), row("a")]
    assert [len(p) for p in relay.packed(alone)] == [1, 1]
