"""Every Redis key and channel name tempest uses, in one place.

Queues are plain lists named after the queue so that the 2012 workers, which ``BLPOP <queue>``,
keep working; keys tempest adds for itself live under the ``tempest:`` prefix.
"""

SESSION = "session:{id}"


def queue(name):
    """The Redis list that holds the jobs of queue ``name`` (the legacy name, unprefixed)."""
    return name


def session(session_id):
    return SESSION.format(id=session_id)

# pub/sub: tempestd writes its [pubsub] durable patterns here so that every publisher (worker
# library, `tempest publish`) knows which channels keep a history
DURABLE_CONFIG = "tempest:pubsub:durable"


def stream(channel):
    """The Redis Stream holding a durable channel's history (one hash slot per channel)."""
    return "tempest:stream:{" + channel + "}"
