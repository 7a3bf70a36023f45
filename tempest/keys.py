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
