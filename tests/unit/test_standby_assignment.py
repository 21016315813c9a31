"""standby_partitions (runtime/standby.py): which partitions a worker replicates. A pure
function, so every worker must compute the same answer from the same owners map."""

from __future__ import annotations

import itertools
import random

import pytest

pytest.importorskip("aiokafka")  # runtime/standby.py is part of the kafka extra

from daggerflow.kafka.standby import standby_partitions


def spread(members: list[str], n: int = 12) -> dict[int, str]:
    """Partitions dealt round-robin over ``members``."""
    return {p: members[p % len(members)] for p in range(n)}


def standbys_of(owners: dict[int, str], k: int, members: list[str]) -> dict[int, set[str]]:
    """Partition -> the members that replicate it, computed as each member would."""
    out: dict[int, set[str]] = {p: set() for p in owners}
    for m in members:
        for p in standby_partitions(owners, m, k, members):
            out[p].add(m)
    return out


def test_k0_is_empty() -> None:
    owners = spread(["a", "b", "c"])
    for me in "abc":
        assert standby_partitions(owners, me, 0) == set()
        assert standby_partitions(owners, me, 0, ["a", "b", "c"]) == set()


def test_negative_k_is_an_error() -> None:
    with pytest.raises(ValueError):
        standby_partitions({0: "a"}, "b", -1)


def test_k1_one_member_has_nobody_to_replicate() -> None:
    owners = spread(["a"])
    assert standby_partitions(owners, "a", 1) == set()
    assert standby_partitions(owners, "a", 1, ["a"]) == set()


def test_k1_two_members_replicate_each_other() -> None:
    owners = spread(["a", "b"], 6)
    assert standby_partitions(owners, "a", 1) == {1, 3, 5}
    assert standby_partitions(owners, "b", 1) == {0, 2, 4}


def test_k1_three_members_next_one_in_the_ring() -> None:
    owners = spread(["a", "b", "c"], 6)  # a: 0,3  b: 1,4  c: 2,5
    assert standby_partitions(owners, "b", 1) == {0, 3}  # a -> b
    assert standby_partitions(owners, "c", 1) == {1, 4}  # b -> c
    assert standby_partitions(owners, "a", 1) == {2, 5}  # c -> a (cyclic)


def test_ring_order_is_sorted_not_given_order() -> None:
    owners = {0: "w2", 1: "w10", 2: "w1"}  # sorted as strings: w1, w10, w2
    members = ["w2", "w1", "w10"]
    assert standby_partitions(owners, "w10", 1, members) == {2}
    assert standby_partitions(owners, "w2", 1, members) == {1}
    assert standby_partitions(owners, "w1", 1, members) == {0}


def test_default_members_are_owners_plus_me() -> None:
    owners = spread(["a", "b"], 4)
    # A new worker "c" that owns nothing yet: the ring is a, b, c; b's successor is c.
    assert standby_partitions(owners, "c", 1) == {1, 3}
    assert standby_partitions(owners, "c", 1) == standby_partitions(owners, "c", 1, ["a", "b", "c"])


@pytest.mark.parametrize("n_members", [1, 2, 3, 5])
@pytest.mark.parametrize("extra", [0, 1, 4])
def test_k_at_least_members_minus_one_replicates_everything_else(n_members: int, extra: int) -> None:
    members = [f"w{i}" for i in range(n_members)]
    owners = spread(members)
    k = max(0, n_members - 1) + extra
    if k == 0:
        k = 1
    for me in members:
        assert standby_partitions(owners, me, k, members) == {p for p, o in owners.items() if o != me}


@pytest.mark.parametrize("k", [0, 1, 2, 3, 6])
def test_owner_never_its_own_standby_and_k_distinct_standbys(k: int) -> None:
    members = [f"w{i}" for i in range(5)]
    rng = random.Random(k)
    owners = {p: rng.choice(members) for p in range(24)}
    for p, holders in standbys_of(owners, k, members).items():
        assert owners[p] not in holders
        assert len(holders) == min(k, len(members) - 1)


def test_deterministic_whatever_the_input_order() -> None:
    members = ["d", "a", "c", "b"]
    owners = {p: members[(p * 7) % 4] for p in range(12)}
    expected = {m: standby_partitions(owners, m, 2, members) for m in members}
    for perm in itertools.permutations(members):
        shuffled_owners = dict(sorted(owners.items(), key=lambda kv: -kv[0]))
        for m in members:
            assert standby_partitions(shuffled_owners, m, 2, iter(perm)) == expected[m]
            assert standby_partitions(owners, m, 2, perm) == expected[m]


def test_me_not_a_member_gets_nothing() -> None:
    owners = spread(["a", "b"])
    assert standby_partitions(owners, "z", 1, ["a", "b"]) == set()


def test_owner_that_left_still_gets_standbys() -> None:
    # "b" died; the owners map still names it until its partitions move. Its successor in
    # the live ring takes the standby, so the failover target is warm.
    owners = {0: "a", 1: "b", 2: "c"}
    members = ["a", "c"]
    assert standby_partitions(owners, "c", 1, members) == {0, 1}
    assert standby_partitions(owners, "a", 1, members) == {2}
