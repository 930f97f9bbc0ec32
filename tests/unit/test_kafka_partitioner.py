"""The producers' partitioner: the default (Java client's) placement, each key hashed once."""

from __future__ import annotations

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner

from services.common.kafka import KeyedPartitioner


def test_every_key_goes_where_the_default_partitioner_sends_it() -> None:
    ours, default = KeyedPartitioner(remembered=64), DefaultPartitioner()
    rng = random.Random(7)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(300)]
    keys += [rng.randbytes(rng.randint(0, 40)) for _ in range(300)]
    for count in (1, 2, 3, 4, 7, 12):
        partitions = list(range(count))
        for key in keys + keys[:50]:  # some again, from the cache
            assert ours(key, partitions, partitions) == default(key, partitions, partitions)


def test_a_key_is_hashed_once_while_remembered() -> None:
    ours = KeyedPartitioner(remembered=8)
    for _ in range(5):
        ours(b"team-1", [0, 1, 2, 3], [0, 1, 2, 3])
    info = ours._hash.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_a_keyless_message_goes_to_an_available_partition() -> None:
    ours = KeyedPartitioner()
    assert {ours(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
