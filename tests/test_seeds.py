"""Seed lists: ranges, limits, and writing them back."""

import pytest

from reprogrid.scheduler.seeds import MAX_SEED, SeedError, format_seeds, parse_seeds


def test_ranges_and_single_seeds_expand_in_written_order():
    assert list(parse_seeds("5-7,200,0-1")) == [5, 6, 7, 200, 0, 1]


def test_a_list_may_mix_integers_and_range_strings():
    assert list(parse_seeds([3, "10-11"])) == [3, 10, 11]


def test_the_largest_unsigned_64_bit_seed_is_accepted():
    assert list(parse_seeds(str(MAX_SEED))) == [2**64 - 1]


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
    assert list(parse_seeds(format_seeds(seeds))) == seeds


def test_a_billion_seeds_are_counted_without_being_listed():
    seeds = parse_seeds("0-999999999")
    assert seeds.count == 10**9
    assert seeds.runs == ((0, 999999999),)


def test_the_whole_64_bit_range_is_counted_exactly():
    assert parse_seeds(f"0-{MAX_SEED}").count == 2**64


def test_overlapping_ranges_are_refused_arithmetically():
    with pytest.raises(SeedError, match="seed 500000000 is listed twice"):
        parse_seeds("0-999999999,500000000-1500000000")


def test_adjacent_ranges_do_not_overlap_and_write_back_merged():
    seeds = parse_seeds("0-4,5-9,20")
    assert str(seeds) == "0-9,20"
    assert list(parse_seeds(str(seeds))) == list(seeds)
