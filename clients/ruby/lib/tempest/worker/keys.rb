# frozen_string_literal: true

module Tempest
  # Every Redis key tempest uses (tempest/keys.py). Queues are plain lists named after the
  # queue, sessions the 2012 `session:<id>` hashes, the rest lives under `tempest:`.
  module Keys
    DURABLE_CONFIG = "tempest:pubsub:durable"
    SHARDED_CONFIG = "tempest:pubsub:sharded" # "1": [pubsub] sharded, publish with SPUBLISH
    WORKERS = "tempest:workers"

    module_function

    def stream(channel) = "tempest:stream:{#{channel}}"
    def session(id) = "session:#{id}"
    def grants(id) = "tempest:grants:#{id}"
    def low(queue) = "tempest:low:{#{queue}}"
    def processing(queue, worker_id) = "tempest:processing:{#{queue}}:#{worker_id}"
    def alive(worker_id) = "tempest:alive:#{worker_id}"
    def gather(gather_id) = "tempest:gather:{#{gather_id}}"
  end
end
