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


def _murmur2_word_by_word(data: bytes) -> int:
    """Kafka's murmur2 written out as its Java source reads, a word at a time."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    end = len(data) - len(data) % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    for shift, at in ((16, end + 2), (8, end + 1), (0, end)):
        if at < len(data):
            h ^= data[at] << shift
    if end < len(data):
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def test_murmur2_agrees_with_the_word_by_word_form_for_every_length() -> None:
    data = bytes(range(7, 7 + 200))
    for length in range(70):
        assert murmur2(data[:length]) == _murmur2_word_by_word(data[:length]), length
