from __future__ import annotations

import pytest

from herald.bus.partitioner import murmur2, partition_for

# Produced by Kafka's own org.apache.kafka.common.utils.Utils.murmur2 (signed Java ints),
# as recorded in kafkajs' Java-compatibility test (src/producer/partitioners/defaultJava).
JAVA_MURMUR2 = {
    "0": 971027396,
    "1": -1993445489,
    "128": -326012175,
    "2187": -1508407203,
    "16384": -325739742,
    "78125": -1654490814,
    "279936": 1462227128,
    "823543": -2014198330,
}


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2.items())
def test_murmur2_matches_kafka_java_client(key: str, expected: int) -> None:
    assert _signed(murmur2(key.encode())) == expected


def test_partition_is_stable_and_in_range() -> None:
    for key in ("user-1", "a@example.com", "", "ключ"):
        p = partition_for(key, 12)
        assert 0 <= p < 12
        assert partition_for(key, 12) == p


def test_keys_spread_over_partitions() -> None:
    counts = [0] * 8
    for i in range(8000):
        counts[partition_for(f"user-{i}", 8)] += 1
    assert min(counts) > 800  # roughly 1000 each; a broken hash piles keys into a few
