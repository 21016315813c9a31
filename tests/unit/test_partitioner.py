"""Our murmur2 partitioner agrees with aiokafka's (the Java client's) on every key shape."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from daggerflow.kafka.partitioner import murmur2, partition_for_key


def test_same_hash_and_partition_as_aiokafka() -> None:
    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"order-1", "ünïcødé".encode(), bytes(range(256))]
    keys += [rng.randbytes(rng.randrange(0, 64)) for _ in range(2000)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF, key
        for count in (1, 3, 12, 100):
            assert partition_for_key(key, count) == DefaultPartitioner()(key, list(range(count)), []), (key, count)


def test_known_values_of_the_java_client() -> None:
    # Utils.murmur2 test vectors of the Java client (org.apache.kafka.common.utils.UtilsTest),
    # as signed ints there.
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
               b"abc": 479470107}  # fmt: skip
    for key, signed in vectors.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key
