"""Redis Cluster hash slots: the slot of a key (CRC16 of the key, or of its hash tag, modulo
16,384) and the key a command is routed by. A leaf module (no I/O), so that the worker library
routes its commands without loading redis-py.
"""

from __future__ import annotations

from collections.abc import Sequence

SLOTS = 16384

# commands with no key, answered by any node (or, for SCRIPT and FUNCTION, needed on every master)
KEYLESS = frozenset({"PING", "ECHO", "INFO", "TIME", "ROLE", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "AUTH",
                     "HELLO", "SELECT", "READONLY", "READWRITE", "ASKING", "DBSIZE", "PUBLISH", "PUBSUB",
                     "SCRIPT", "FUNCTION", "MEMORY", "SLOWLOG", "LATENCY", "LASTSAVE", "WAIT", "QUIT"})
EVERY_MASTER = frozenset({"SCRIPT", "FUNCTION"})  # SCRIPT LOAD: each master keeps its own scripts


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC = _table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """The slot of ``key``: of its hash tag (the text between the first ``{`` and the next
    ``}``, when not empty), else of the whole key."""
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16(data) % SLOTS


def _text(arg: str | bytes | int | float) -> str:
    return arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)


def command_name(command: Sequence[str | bytes | int | float]) -> str:
    return _text(command[0]).upper()


def command_key(command: Sequence[str | bytes | int | float]) -> str | bytes | None:
    """The key ``command`` is routed by (its first key), or None for a command with no key.
    The commands tempest sends: one key first (most), EVAL/EVALSHA/FCALL (the first of their
    keys, none when numkeys is 0), XREAD/XREADGROUP (the first stream)."""
    name = command_name(command)
    if name in KEYLESS or len(command) < 2:
        return None
    if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"):
        return _key(command[3]) if len(command) > 3 and _text(command[2]) != "0" else None
    if name in ("XREAD", "XREADGROUP"):
        words = [_text(arg).upper() for arg in command]
        if "STREAMS" in words and words.index("STREAMS") + 1 < len(command):
            return _key(command[words.index("STREAMS") + 1])
        return None
    return _key(command[1])


def _key(arg: str | bytes | int | float) -> str | bytes:
    return arg if isinstance(arg, (str, bytes)) else str(arg)


def queue_fits_cluster(queue: str) -> bool:
    """Whether every key of ``queue`` (``tempest:low:{<queue>}``, its processing lists...) is
    in the queue's own slot: true unless its name has a ``{`` or ``}``, whose hash tag differs
    from the one the keys give it (``{shop}.orders`` is in the slot of ``shop``, its low list
    ``tempest:low:{{shop}.orders}`` in the slot of ``{shop``)."""
    return "{" not in queue and "}" not in queue
