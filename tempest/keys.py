"""Every Redis key and channel name tempest uses, in one place.

Queues are plain lists named after the queue itself (``tempest``, or a route's queue), with no
prefix, so that the 2012 workers' ``BLPOP <queue>`` keeps working; pub/sub channels are the
channel names themselves. Keys tempest adds for itself live under the ``tempest:`` prefix.
Sessions keep the 2012 protocol's ``session:<id>`` hashes.
"""

# pub/sub: tempestd writes its [pubsub] durable patterns here so that every publisher (worker
# library, `tempest publish`) knows which channels keep a history
DURABLE_CONFIG = "tempest:pubsub:durable"


def stream(channel):
    """The Redis Stream holding a durable channel's history (one hash slot per channel)."""
    return "tempest:stream:{" + channel + "}"


def session(session_id):
    """The hash of one session (2012 protocol): each field's value is the JSON list [value]."""
    return "session:" + session_id
