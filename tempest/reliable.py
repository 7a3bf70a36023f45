"""Reliable delivery's side of the protocol, shared by the worker library and tempestd's
redeliverer: the Lua scripts, the registration entries and the commands built from them.

A reliable worker moves each job it takes from ``<queue>`` into its own processing list
(``keys.processing``) and empties that list once the batch is answered; it keeps a heartbeat
key (``keys.alive``) with a TTL, and registers ``"<queue> <worker id>"`` entries in the set
``keys.WORKERS``. tempestd's redeliverer gives the processing list of a worker whose heartbeat
expired back to the head of its queue, counting each job's deliveries; a job given back more
than ``max_redeliveries`` times goes to the dead-letter list instead.

Only command lists are built here (no I/O, neither gevent nor redis-py), so that both sides
send them over their own connections; docs/protocol.md describes the same commands for
clients in other languages.
"""

from __future__ import annotations

from tempest import keys

Command = list[str | int | float | bytes]

# move up to ARGV[1] jobs from the queue (KEYS[1]) to the processing list (KEYS[2])
TAKE = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not job then break end
  out[#out + 1] = job
end
return out
"""
# the same from the queue (KEYS[1]), else from its low list (KEYS[3]): one round trip for both;
# the reply's first element says where the jobs after it came from (0: the queue, 1: low)
TAKE_THEN_LOW = """
local out = {0}
for which, source in ipairs({KEYS[1], KEYS[3]}) do
  out[1] = which - 1
  for i = 1, tonumber(ARGV[1]) do
    local job = redis.call('LMOVE', source, KEYS[2], 'LEFT', 'RIGHT')
    if not job then break end
    out[#out + 1] = job
  end
  if #out > 1 then break end
end
return out
"""
# everything left in a processing list (KEYS[1]) back to the head of its queue (KEYS[2]), oldest first
GIVE_BACK_ALL = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
"""
# KEYS: processing list, queue, deliveries hash, dead-letter list; ARGV: max redeliveries.
# A url job whose env says "redeliver": false (POST, PATCH...) is not given back but returned,
# so that tempestd answers it 502; the others go back to the head of the queue, or to the dead
# letters once given back more than ARGV[1] times. Returns {given back, dead, {refused jobs}}.
GIVE_BACK = """
local moved, dead, refused = 0, 0, {}
while true do
  local job = redis.call('RPOP', KEYS[1])
  if not job then break end
  local ok, decoded = pcall(cjson.decode, job)
  local id = job
  local env = nil
  if ok and type(decoded) == 'table' then
    if decoded[4] ~= nil then id = tostring(decoded[4]) end
    if type(decoded[2]) == 'table' and type(decoded[2][1]) == 'table' then env = decoded[2][1] end
  end
  if env ~= nil and env['redeliver'] == false then
    refused[#refused + 1] = job
  elseif redis.call('HINCRBY', KEYS[3], id, 1) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[3], id)
    redis.call('RPUSH', KEYS[4], job)
    dead = dead + 1
  else
    redis.call('LPUSH', KEYS[2], job)
    moved = moved + 1
  end
end
redis.call('EXPIRE', KEYS[3], 86400)
return {moved, dead, refused}
"""


def entry(queue: str, worker_id: str) -> str:
    """The registration of one worker on one queue, a member of ``keys.WORKERS``."""
    return f"{queue} {worker_id}"


def parse_entry(text: str) -> tuple[str, str] | None:
    """(queue, worker id) of a registration entry, or None if it is not one."""
    queue, sep, worker_id = text.partition(" ")
    return (queue, worker_id) if sep and queue and worker_id else None


# the worker's side


def beat(worker_id: str, queues: list[str], heartbeat: float) -> list[Command]:
    """The heartbeat, then the registration (in this order: tempestd must never see a worker
    registered without a heartbeat). Repeated with every beat, so that a worker taken for dead
    after a long pause registers again."""
    return [["SET", keys.alive(worker_id), "1", "PX", int(heartbeat * 1000)],
            ["SADD", keys.WORKERS, *[entry(queue, worker_id) for queue in queues]]]


def take(queue: str, worker_id: str, count: int) -> Command:
    """Move up to ``count`` waiting jobs into the processing list, without blocking."""
    return ["EVAL", TAKE, 2, queue, keys.processing(queue, worker_id), count]


def take_then_low(queue: str, worker_id: str, count: int) -> Command:
    """``take``, else ``take_low`` when the queue is empty, in one script; the reply is
    [0 (from the queue) or 1 (from its low list), job...]."""
    return ["EVAL", TAKE_THEN_LOW, 3, queue, keys.processing(queue, worker_id), keys.low(queue), count]


def take_low(queue: str, worker_id: str, count: int) -> Command:
    """Move up to ``count`` waiting low-priority jobs of ``queue`` into its processing list
    (taken only when the queue itself is empty)."""
    return ["EVAL", TAKE, 2, keys.low(queue), keys.processing(queue, worker_id), count]


def take_blocking(queue: str, worker_id: str, timeout: float, low: bool = False) -> Command:
    """Wait up to ``timeout`` seconds for one job (of the queue's low list if ``low``), moved
    into the queue's processing list."""
    return ["BLMOVE", keys.low(queue) if low else queue, keys.processing(queue, worker_id), "LEFT", "RIGHT", timeout]


def release(queue: str, worker_id: str) -> Command:
    """The batch is answered: empty its processing list (a batch comes from one queue, and is
    finished before the next is taken, so the list holds that batch alone)."""
    return ["DEL", keys.processing(queue, worker_id)]


def unregister(worker_id: str, queues: list[str]) -> list[Command]:
    """A clean stop: jobs still held go back to their queues, the worker is forgotten."""
    commands: list[Command] = [["EVAL", GIVE_BACK_ALL, 2, keys.processing(q, worker_id), q] for q in queues]
    return commands + [["SREM", keys.WORKERS, *[entry(q, worker_id) for q in queues]],
                       ["DEL", keys.alive(worker_id)]]


# tempestd's side


def give_back(queue: str, worker_id: str, max_redeliveries: int) -> Command:
    """Give a dead worker's jobs of ``queue`` back; the reply is [given back, dead-lettered,
    [the jobs not safe to run twice, to answer 502]].
    EVAL, not EVALSHA: it runs only when a worker died, so the script's text costs nothing."""
    keys_ = [keys.processing(queue, worker_id), queue, keys.deliveries(queue), keys.dead(queue)]
    return ["EVAL", GIVE_BACK, 4, *keys_, max_redeliveries]
