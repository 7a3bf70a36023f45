"""The pure parts of tempest queues and tempest dead (tempest/queuetools.py): rates, ages, the
tables, the description and the refreshing of dead letters. No Redis."""

import json

from tempest.queuetools import Sample, age, describe, format_dead, format_queues, oldest_age, rates, refreshed


def job(queued=None, action="url", **env):
    if queued is not None:
        env["queued"] = queued
    return json.dumps([action, [env], None, "id1"]).encode()


def test_rates_in_and_out_over_the_interval():
    before = Sample(10.0, {"q": 5}, {"q": 1}, {"q": 100})
    after = Sample(12.0, {"q": 9}, {"q": 1}, {"q": 120})
    # 20 pushed in 2 s; the depth grew by 4, so 16 went out
    assert rates("q", before, after) == (10.0, 8.0)
    drained = Sample(12.0, {"q": 0}, {"q": 0}, {"q": 100})
    assert rates("q", before, drained) == (0.0, 3.0)  # nothing in, the 6 waiting went out
    grown_by_redelivery = Sample(12.0, {"q": 20}, {"q": 1}, {"q": 100})
    assert rates("q", before, grown_by_redelivery) == (0.0, 0.0)  # never negative
    assert rates("q", None, after) == (None, None)
    expired = Sample(12.0, {"q": 5}, {"q": 1}, {"q": 3})  # the counters' hash expired meanwhile
    assert rates("q", before, expired) == (None, None)
    not_a_list = Sample(12.0, {"q": None}, {"q": 1}, {"q": 120})
    assert rates("q", before, not_a_list) == (10.0, None)


def test_the_oldest_age_is_the_max_over_the_ends_that_carry_queued():
    ends = [job(90.0), job(40.0), None, job(action="mail"), b"not json", job("soon")]
    assert oldest_age(ends, 100.0) == 60.0
    assert oldest_age([job(), None], 100.0) is None  # no queued anywhere: unknown
    assert oldest_age([job(100.5)], 100.0) == 0.0  # a clock ahead: not a negative age
    assert oldest_age([job(True)], 100.0) is None


def test_ages_read_as_seconds_then_as_uptimes():
    assert [age(None), age(0.04), age(59.94), age(61), age(3 * 86400 + 3661)] == \
        [None, "0.0s", "59.9s", "0:01:01", "3 days, 1:01:01"]


def test_the_queues_table_is_aligned_with_dashes_for_unknowns():
    rows = [{"queue": "tempest", "queued": 12, "low": 0, "live": 3, "busy": 2, "idle": 1, "in_per_second": 25.04,
             "out_per_second": 24.0, "oldest_age": 1.25, "dead": 0},
            {"queue": "a-long-queue-name", "queued": None, "low": 1, "live": 0, "busy": 0, "idle": 0,
             "in_per_second": None, "out_per_second": None, "oldest_age": None, "dead": 7}]
    lines = format_queues(rows).splitlines()
    assert lines[0].split() == ["QUEUE", "QUEUED", "LOW", "LIVE", "BUSY", "IDLE", "IN/S", "OUT/S", "OLDEST", "DEAD"]
    assert lines[1].split() == ["tempest", "12", "0", "3", "2", "1", "25.0", "24.0", "1.2s", "0"]
    assert lines[2].split() == ["a-long-queue-name", "-", "1", "0", "0", "0", "-", "-", "-", "7"]
    assert lines[0].index("QUEUED") == lines[1].index("12") == len("a-long-queue-name  ")


def test_dead_letters_described_whatever_they_hold():
    url = json.dumps(["url", [{"method": "PUT", "url": "/x\x1b[2J"}], "h:1", "abc"]).encode()
    assert describe(0, url) == {"index": 0, "id": "abc", "action": "url", "size": len(url), "method": "PUT",
                                "url": "/x\x1b[2J"}
    assert describe(1, b"[1, 2]")["id"] is None  # not a four-element job
    assert describe(2, json.dumps(["url", "oops", None, 7]).encode())["id"] == "7"  # a job id that is a number
    table = format_dead([describe(0, url)])
    assert "\x1b" not in table and "/x\\x1b[2J" in table  # a URL cannot write to the terminal


def test_a_requeued_url_job_is_fresh_and_others_are_untouched():
    raw = json.dumps(["url", [{"url": "/a", "queued": 1.0, "deadline": 2.0}], "h:1", "j"]).encode()
    assert json.loads(refreshed(raw, 1000.0)) == ["url", [{"url": "/a", "queued": 1000.0}], "h:1", "j"]
    other = json.dumps(["mail", [{"deadline": 2.0}], None, "m"]).encode()
    assert refreshed(other, 1000.0) is other
    assert refreshed(b"garbage", 1000.0) == b"garbage"


def test_at_most_1000_queues_the_ini_files_first(tmp_path):
    from tempest import config
    from tempest.queuetools import MAX_QUEUES, queue_names

    ini = tmp_path / "tempest.ini"
    ini.write_text("[front]\nqueue = zz-front\n[route:/a/]\nqueue = zz-route\n[pubsub]\nws_queue = zz-ws\n")
    settings = config.load(str(ini))
    registered = {f"q{i:04d}": ["w"] for i in range(1500)} | {"zz-route": ["w"]}
    names = queue_names(settings, registered)
    assert len(names) == MAX_QUEUES == 1000 and names == sorted(names)
    assert {"zz-front", "zz-route", "zz-ws"} <= set(names) and names[:2] == ["q0000", "q0001"]
    assert "q0997" not in names  # 3 places taken by the INI file's queues
    assert queue_names(settings, {}) == ["zz-front", "zz-route", "zz-ws"]
