"""Seed lists: ranges, limits, and writing them back."""

import pytest

from reprogrid.scheduler.seeds import MAX_SEED, SeedError, format_seeds, parse_seeds


def test_ranges_and_single_seeds_expand_in_written_order():
    assert parse_seeds("5-7,200,0-1") == [5, 6, 7, 200, 0, 1]


def test_a_list_may_mix_integers_and_range_strings():
    assert parse_seeds([3, "10-11"]) == [3, 10, 11]


def test_the_largest_unsigned_64_bit_seed_is_accepted():
    assert parse_seeds(str(MAX_SEED)) == [2**64 - 1]


@pytest.mark.parametrize("text", ["1-2-3", "a-5", "5-", "x", "", "1,,2"])
def test_malformed_ranges_are_refused(text):
    with pytest.raises(SeedError):
        parse_seeds(text)


def test_a_backwards_range_is_refused():
    with pytest.raises(SeedError, match="backwards"):
        parse_seeds("9-2")


@pytest.mark.parametrize("value", [[-1], [2**64], str(2**64)])
def test_seeds_outside_the_unsigned_64_bit_range_are_refused(value):
    with pytest.raises(SeedError, match=r"outside 0\.\.2\*\*64-1"):
        parse_seeds(value)


def test_a_seed_listed_twice_is_refused():
    with pytest.raises(SeedError, match="twice"):
        parse_seeds("0-3,2")


def test_format_writes_the_shortest_equivalent_ranges():
    seeds = [0, 1, 2, 3, 7, 9, 10]
    assert format_seeds(seeds) == "0-3,7,9-10"
    assert parse_seeds(format_seeds(seeds)) == seeds
