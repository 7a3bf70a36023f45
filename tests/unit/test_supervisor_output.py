"""Unit tests of tempest.supervisor.output: lines for tempestd's log, size-rotated files, and the drain
greenlet that reads a child's pipe until EOF. Real pipes and files in a temporary directory."""

import errno
import logging
import os
import threading

import gevent
import gevent.os
import pytest

from tempest.supervisor import output
from tempest.supervisor.output import MAX_LINE, LogLines, RotatingFile, drain, spawn_drain

pytestmark = pytest.mark.timeout(30)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def messages(self):
        return [r.getMessage() for r in self.records]


@pytest.fixture
def collected():
    """A real logger (not propagating) whose records are kept."""
    logger = logging.getLogger("test_output.child")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


# LogLines


def test_lines_are_split_and_prefixed(collected):
    logger, handler = collected
    lines = LogLines("hello:0", logger)
    lines.write(b"one\ntwo\n")
    assert handler.messages == ["[hello:0] one", "[hello:0] two"]
    assert {r.levelno for r in handler.records} == {logging.INFO}


def test_a_partial_line_waits_for_its_newline(collected):
    logger, handler = collected
    lines = LogLines("hello:0", logger)
    lines.write(b"first\nsec")
    assert handler.messages == ["[hello:0] first"]
    lines.write(b"o")
    lines.write(b"nd")
    assert handler.messages == ["[hello:0] first"]
    lines.write(b"\nthird\n")
    assert handler.messages == ["[hello:0] first", "[hello:0] second", "[hello:0] third"]


def test_crlf_empty_lines_and_bad_utf8(collected):
    logger, handler = collected
    lines = LogLines("w:1", logger)
    lines.write(b"dos\r\n\n")
    lines.write("caf\u00e9".encode()[:-1])  # a character split across two reads
    lines.write("caf\u00e9".encode()[-1:] + b"\n\xff\xfe\n")
    assert handler.messages == ["[w:1] dos", "[w:1] ", "[w:1] caf\u00e9", "[w:1] \ufffd\ufffd"]


def test_a_line_without_newline_is_cut_at_max_line(collected):
    logger, handler = collected
    lines = LogLines("hello:0", logger)
    chunk = b"x" * 1000
    total = 0
    for _ in range(1000):  # 1 MB and never a newline
        lines.write(chunk)
        total += len(chunk)
        emitted = sum(len(m) - len("[hello:0] ") for m in handler.messages)
        assert total - emitted <= MAX_LINE  # what it holds back stays bounded
    assert handler.messages
    assert all(m == "[hello:0] " + "x" * MAX_LINE for m in handler.messages)
    assert len(handler.messages) == total // MAX_LINE
    lines.close()  # the rest comes out at close
    emitted = sum(len(m) - len("[hello:0] ") for m in handler.messages)
    assert emitted == total


def test_exactly_max_line_is_kept_until_more_comes(collected):
    logger, handler = collected
    lines = LogLines("p:0", logger)
    lines.write(b"a" * MAX_LINE)
    assert handler.messages == []
    lines.write(b"\n")
    assert handler.messages == ["[p:0] " + "a" * MAX_LINE]


def test_close_flushes_the_partial_line_once(collected):
    logger, handler = collected
    lines = LogLines("hello:0", logger)
    lines.write(b"done\nno newline at the end")
    lines.close()
    lines.close()
    assert handler.messages == ["[hello:0] done", "[hello:0] no newline at the end"]


def test_close_without_partial_logs_nothing(collected):
    logger, handler = collected
    lines = LogLines("hello:0", logger)
    lines.write(b"complete\n")
    lines.close()
    assert handler.messages == ["[hello:0] complete"]


def test_default_logger_is_tempest_child():
    assert LogLines("x").logger is logging.getLogger("tempest.child")


# RotatingFile


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_appends_below_maxbytes(tmp_path):
    path = str(tmp_path / "logs" / "out.log")  # the directory is made
    rotating = RotatingFile(path, 100, 3)
    rotating.write(b"a" * 40)
    rotating.write(b"b" * 60)  # exactly maxbytes: no rotation yet
    rotating.close()
    assert read(path) == b"a" * 40 + b"b" * 60
    assert sorted(os.listdir(tmp_path / "logs")) == ["out.log"]


def test_rotates_past_maxbytes_keeping_backups(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 10, 2)
    for letter in b"abcde":
        rotating.write(bytes([letter]) * 10)  # each write fills a file
    rotating.close()
    assert read(path) == b"e" * 10
    assert read(path + ".1") == b"d" * 10
    assert read(path + ".2") == b"c" * 10
    assert sorted(os.listdir(tmp_path)) == ["out.log", "out.log.1", "out.log.2"]  # a and b are gone


def test_rotation_happens_before_the_write_that_would_pass_maxbytes(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 10, 5)
    rotating.write(b"1234567")
    rotating.write(b"89")
    rotating.write(b"ab")  # 9 + 2 > 10
    rotating.close()
    assert read(path + ".1") == b"123456789"
    assert read(path) == b"ab"


def test_backups_zero_truncates_in_place(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 10, 0)
    rotating.write(b"a" * 10)
    rotating.write(b"b" * 4)
    rotating.write(b"c" * 4)
    rotating.close()
    assert read(path) == b"b" * 4 + b"c" * 4
    assert os.listdir(tmp_path) == ["out.log"]


def test_maxbytes_zero_never_rotates(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 0, 3)
    for _ in range(100):
        rotating.write(b"z" * 1000)
    rotating.close()
    assert len(read(path)) == 100_000 and os.listdir(tmp_path) == ["out.log"]


def test_an_existing_file_counts_and_is_appended_to(tmp_path):
    path = str(tmp_path / "out.log")
    with open(path, "wb") as handle:
        handle.write(b"old-data")
    rotating = RotatingFile(path, 10, 1)
    rotating.write(b"+")
    assert read(path) == b"old-data+"
    rotating.write(b"toolong")  # 9 + 7 > 10
    rotating.close()
    assert read(path + ".1") == b"old-data+" and read(path) == b"toolong"


def test_a_write_bigger_than_maxbytes_into_an_empty_file_is_not_split(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 10, 2)
    rotating.write(b"y" * 25)
    rotating.close()
    assert read(path) == b"y" * 25 and os.listdir(tmp_path) == ["out.log"]


def test_a_failed_rotation_does_not_close_someone_elses_descriptor(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 10, 1)
    rotating.write(b"a" * 10)
    os.mkdir(path + ".1")  # a non-empty directory where the backup goes: os.replace fails
    open(os.path.join(path + ".1", "x"), "w").close()
    with pytest.raises(OSError):
        rotating.write(b"b")
    other = os.open(str(tmp_path / "other"), os.O_WRONLY | os.O_CREAT)  # the lowest free number
    try:
        try:
            rotating.write(b"c")
        except OSError:
            pass  # failing again is fine; touching `other` is not
        os.fstat(other)  # the bug: EBADF, rotating closed it
    finally:
        try:
            os.close(other)
        except OSError:
            pass


# drain


class Bytes:
    def __init__(self):
        self.data = bytearray()
        self.writes = 0

    def write(self, data):
        self.data += data
        self.writes += 1


def closed(fd):
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def test_drain_reads_until_eof_and_closes(collected):
    read_end, write_end = os.pipe()
    os.write(write_end, b"some output\n")
    os.close(write_end)
    sink = Bytes()
    drain(read_end, sink)
    assert bytes(sink.data) == b"some output\n"
    assert closed(read_end)


def test_drain_a_megabyte_from_a_thread_without_blocking():
    payload = os.urandom(1024 * 1024)  # much more than a pipe holds (64K)
    read_end, write_end = os.pipe()

    def writer():
        view = memoryview(payload)
        while view:
            view = view[os.write(write_end, view[:100_000]):]  # blocks while the pipe is full
        os.close(write_end)

    thread = threading.Thread(target=writer)
    sink = Bytes()
    greenlet = spawn_drain(read_end, sink)
    gevent.sleep(0.02)  # returns: drain waits for data without blocking the hub
    assert not greenlet.dead and sink.writes == 0
    thread.start()
    try:
        greenlet.join(10)
        assert greenlet.dead and greenlet.successful()
    finally:
        thread.join(5)
    assert not thread.is_alive()
    assert bytes(sink.data) == payload
    assert sink.writes > 1  # read as it came, not all at once
    assert closed(read_end)


def test_drain_a_megabyte_from_another_greenlet():
    payload = os.urandom(1024 * 1024)
    read_end, write_end = os.pipe()
    gevent.os.make_nonblocking(write_end)

    def writer():
        view = memoryview(payload)
        while view:
            view = view[gevent.os.nb_write(write_end, view[:100_000]):]
        os.close(write_end)

    # one thread: the writer gets EAGAIN on a full pipe and waits, so this finishes only if
    # drain gives the hub back whenever the pipe is empty
    sink = Bytes()
    writing = gevent.spawn(writer)
    draining = spawn_drain(read_end, sink)
    gevent.joinall([writing, draining], timeout=10, raise_error=True)
    assert writing.dead and draining.dead
    assert bytes(sink.data) == payload


def test_drain_closes_a_loglines_sink_at_eof(collected):
    logger, handler = collected
    read_end, write_end = os.pipe()
    os.write(write_end, b"line\nlast words")
    os.close(write_end)
    spawn_drain(read_end, LogLines("hello:0", logger)).join(5)
    assert handler.messages == ["[hello:0] line", "[hello:0] last words"]


def test_drain_of_an_empty_pipe_writes_nothing():
    read_end, write_end = os.pipe()
    os.close(write_end)
    sink = Bytes()
    spawn_drain(read_end, sink).join(5)
    assert sink.writes == 0 and closed(read_end)


def test_drain_into_a_rotating_file(tmp_path):
    path = str(tmp_path / "out.log")
    rotating = RotatingFile(path, 64 * 1024, 3)
    payload = b"".join(b"line %06d\n" % n for n in range(30_000))  # 330 KB
    read_end, write_end = os.pipe()
    gevent.os.make_nonblocking(write_end)

    def writer():
        view = memoryview(payload)
        while view:
            view = view[gevent.os.nb_write(write_end, view[:50_000]):]
        os.close(write_end)

    gevent.joinall([gevent.spawn(writer), spawn_drain(read_end, rotating)], timeout=10, raise_error=True)
    rotating.close()
    kept = b"".join(read(p) for p in (path + ".3", path + ".2", path + ".1", path))
    assert payload.endswith(kept) and len(kept) > 3 * 32 * 1024
    assert sorted(os.listdir(tmp_path)) == ["out.log", "out.log.1", "out.log.2", "out.log.3"]
    assert all(os.path.getsize(p) <= 64 * 1024 for p in (path + ".1", path + ".2", path + ".3"))


def test_a_failing_sink_does_not_break_the_childs_pipe():
    class DiskFull:
        def __init__(self):
            self.calls = 0

        def write(self, data):
            self.calls += 1
            if self.calls == 1:
                raise OSError(errno.ENOSPC, "No space left on device")

    read_end, write_end = os.pipe()
    gevent.os.make_nonblocking(write_end)
    sink = DiskFull()
    draining = spawn_drain(read_end, sink)
    gevent.os.nb_write(write_end, b"first\n")
    gevent.sleep(0.05)  # drain reads it, and the sink fails
    try:
        gevent.os.nb_write(write_end, b"second\n")  # the bug: BrokenPipeError, the read end was closed
    finally:
        os.close(write_end)
        draining.join(5)
    assert sink.calls == 2


def test_drain_logs_a_read_error_and_closes(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tempest.child")
    fd = os.open(str(tmp_path), os.O_RDONLY)  # reading a directory fails with EISDIR
    sink = Bytes()
    drain(fd, sink)
    assert closed(fd) and sink.writes == 0
    assert [r.getMessage() for r in caplog.records if r.name == output.log.name] == [
        "reading a child's output failed: [Errno 21] Is a directory"]
