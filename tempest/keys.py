"""Every Redis key and channel name tempest uses, in one place.

Queues are plain lists named after the queue itself (``tempest``, or a route's queue), with no
prefix, so that the 2012 workers' ``BLPOP <queue>`` keeps working; pub/sub channels are the
channel names themselves. Keys tempest adds for itself live under the ``tempest:`` prefix.
Sessions keep the 2012 protocol's ``session:<id>`` hashes.
"""

# pub/sub: tempestd writes its [pubsub] durable patterns here so that every publisher (worker
# library, `tempest publish`) knows which channels keep a history
DURABLE_CONFIG = "tempest:pubsub:durable"
# ... and here "1" when [pubsub] sharded ("0" otherwise): publishers then SPUBLISH, not PUBLISH
SHARDED_CONFIG = "tempest:pubsub:sharded"


def stream(channel: str) -> str:
    """The Redis Stream holding a durable channel's history (one hash slot per channel)."""
    return "tempest:stream:{" + channel + "}"


def session(session_id: str) -> str:
    """The hash of one session (2012 protocol): each field's value is the JSON list [value]."""
    return "session:" + session_id


def grants(session_id: str) -> str:
    """The set of channel patterns a session may subscribe to when they are private
    ([pubsub] private): written by workers (SADD, SREM), read by the front (SMEMBERS)."""
    return "tempest:grants:" + session_id


# priorities: a high job goes to the head of its queue (LPUSH), a normal one to its tail, a
# low one to a list of its own, taken when the queue is empty (docs/protocol.md, "Priorities")


PRIORITIES = ("high", "normal", "low")  # a job's priority, highest first


def low(queue: str) -> str:
    """The low-priority jobs of ``queue`` (the queue's Cluster slot)."""
    return "tempest:low:{" + queue + "}"


def priority_list(queue: str, priority: str) -> str:
    """The list a job of ``priority`` (high, normal, low) of ``queue`` is pushed to."""
    return low(queue) if priority == "low" else queue


# reliable delivery: a reliable worker takes jobs into its own processing list and keeps a
# heartbeat key alive; tempestd gives back the jobs of workers whose heartbeat expired. The
# per-queue keys carry the queue as a hash tag, so that they share its Cluster slot.
WORKERS = "tempest:workers"  # set of "<queue> <worker id>": the processing lists to watch


def processing(queue: str, worker_id: str) -> str:
    """The jobs a reliable worker took from ``queue`` and has not finished."""
    return "tempest:processing:{" + queue + "}:" + worker_id


def alive(worker_id: str) -> str:
    """A reliable worker's heartbeat (a key with a TTL)."""
    return "tempest:alive:" + worker_id


def deliveries(queue: str) -> str:
    """How many times each job of ``queue`` was given back after its worker died."""
    return "tempest:deliveries:{" + queue + "}"


def dead(queue: str) -> str:
    """The jobs of ``queue`` given back too often: they kill their workers (dead letters)."""
    return "tempest:dead:{" + queue + "}"


def gather(gather_id: str) -> str:
    """The stream of a fan-out's answers: made by its gatherer, added to by the answer
    endpoint (entries ``part <index> answer <json>``), read by the gatherer with XREAD."""
    return "tempest:gather:{" + gather_id + "}"


def body(token: str) -> str:
    """A spooled request body (``spool = redis``): a list of chunks, with a TTL, deleted once
    its job is answered (tempest.spool)."""
    return "tempest:body:{" + token + "}"


# the instance registry (tempest.instances): each running tempestd's description, with a TTL,
# and the index of their ids that `tempest status --all` reads
INSTANCES = "tempest:instances"  # sorted set: instance id -> when its entry expires (ms, the writer's clock)


def instance(instance_id: str) -> str:
    """A running tempestd's entry (JSON, with a TTL); its id is ``<host>:<pid>:<random>``."""
    return "tempest:instance:" + instance_id
