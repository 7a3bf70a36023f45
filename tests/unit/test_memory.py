"""When tempestd gives memory back: once a burst of connections has passed."""

from tempest.memory import Trimmer


def test_trims_once_the_connections_fall_to_a_quarter_of_a_large_peak():
    calls = []
    trimmer = Trimmer(trim=calls.append)
    for count in (10, 5000, 12000, 9000, 3001):
        assert not trimmer.observe(count)
    assert trimmer.observe(3000) and calls == [0]  # a quarter of 12,000
    assert trimmer.observe(100) and calls == [0, 0]  # a quarter of the 3,000 left: a few trims per drain
    assert not trimmer.observe(0)  # from 100: no burst of 1,000 or more
    for count in (800, 0):
        assert not trimmer.observe(count)  # small bursts are not worth it
    assert calls == [0, 0]


def test_the_real_malloc_trim_can_be_called():
    assert Trimmer().observe(0) is False
    trimmer = Trimmer()
    trimmer.observe(2000)
    assert trimmer.observe(0)  # glibc's malloc_trim ran (or nothing, without glibc)
