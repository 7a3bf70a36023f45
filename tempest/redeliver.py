"""Giving back the jobs of reliable workers that died (the design's reliable delivery).

A reliable worker (``Worker(reliable=True)``) moves each job it takes into its own processing
list and removes it once answered, and keeps a heartbeat key alive. tempestd checks the
registered workers every ``[front] redeliver_interval`` seconds: the processing list of a worker
whose heartbeat expired goes back to the head of its queue, each job's delivery counted; a job
given back more than ``max_redeliveries`` times goes to the dead-letter list instead, since it
is what kills its workers. Delivery is at least once: a worker that was only frozen may still
answer a job another worker got too (the second answer is dropped by the front).
"""

import logging

import gevent
import hiredis

from tempest import keys
from tempest.redisconn import RawConnection, RedisError

log = logging.getLogger(__name__)

# KEYS: processing list, queue, deliveries hash, dead-letter list; ARGV: max redeliveries
GIVE_BACK = """
local moved, dead = 0, 0
while true do
  local job = redis.call('RPOP', KEYS[1])
  if not job then break end
  local ok, decoded = pcall(cjson.decode, job)
  local id = job
  if ok and type(decoded) == 'table' and decoded[4] ~= nil then id = tostring(decoded[4]) end
  if redis.call('HINCRBY', KEYS[3], id, 1) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[3], id)
    redis.call('RPUSH', KEYS[4], job)
    dead = dead + 1
  else
    redis.call('LPUSH', KEYS[2], job)
    moved = moved + 1
  end
end
redis.call('EXPIRE', KEYS[3], 86400)
return {moved, dead}
"""


class Redeliverer:
    def __init__(self, url, stats, interval, max_redeliveries):
        self.connection = RawConnection(url)
        self.stats = stats
        self.interval = interval
        self.max_redeliveries = max_redeliveries

    def run(self):
        while True:
            gevent.sleep(self.interval)
            try:
                self.check()
            except RedisError as exc:
                log.debug("cannot check the reliable workers: %s", exc)

    def check(self):
        """Give back the jobs of every registered worker whose heartbeat expired."""
        [entries] = self.connection.execute([["SMEMBERS", keys.WORKERS]])
        if not entries or isinstance(entries, hiredis.ReplyError):
            return
        entries = [e for e in (e.decode("utf-8", "replace") for e in entries) if " " in e]
        living = self.connection.execute([["EXISTS", keys.alive(e.split(" ", 1)[1])] for e in entries])
        for entry, alive in zip(entries, living):
            if alive == 0:
                self._give_back(entry)

    def _give_back(self, entry):
        queue, worker_id = entry.split(" ", 1)
        command = [keys.processing(queue, worker_id), queue, keys.deliveries(queue), keys.dead(queue)]
        # EVAL, not EVALSHA: it runs only when a worker died, so the script's text costs nothing
        [reply] = self.connection.execute([["EVAL", GIVE_BACK, 4, *command, self.max_redeliveries]])
        if isinstance(reply, hiredis.ReplyError):  # the worker stays registered: tried again next time
            log.error("cannot give back the jobs of worker %s on %s: %s", worker_id, queue, reply)
            return
        self.connection.execute([["SREM", keys.WORKERS, entry]])
        moved, dead = reply
        self.stats.jobs_redelivered += moved
        self.stats.jobs_dead += dead
        if moved or dead:
            log.warning("worker %s died holding %d job(s) of queue %s: %d given back, %d to %s",
                        worker_id, moved + dead, queue, moved, dead, keys.dead(queue))
