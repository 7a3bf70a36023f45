# frozen_string_literal: true

require "tempest/worker/keys"

module Tempest
  # Reliable delivery, the worker's side: the commands of tempest/reliable.py, as lists.
  # A reliable worker sets its heartbeat, then registers "<queue> <worker id>" (both again
  # every third of the heartbeat period), moves each job it takes into its own processing
  # list, deletes that list once the job is answered, and gives back what it holds on a clean
  # stop. tempestd gives the processing list of a worker whose heartbeat expired back to the
  # queue.
  module Reliable
    # everything left in a processing list (KEYS[1]) back to the head of its queue (KEYS[2])
    GIVE_BACK_ALL = <<~LUA
      local n = 0
      while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
      return n
    LUA

    module_function

    def entry(queue, worker_id) = "#{queue} #{worker_id}"

    # the heartbeat, then the registration: never registered without a heartbeat
    def beat(worker_id, queues, heartbeat)
      [["SET", Keys.alive(worker_id), "1", "PX", (heartbeat * 1000).to_i],
       ["SADD", Keys::WORKERS, *queues.map { |queue| entry(queue, worker_id) }]]
    end

    # one waiting job moved into the processing list, without blocking (nil when none)
    def take(queue, worker_id)
      ["LMOVE", queue, Keys.processing(queue, worker_id), "LEFT", "RIGHT"]
    end

    # one low-priority job of the queue, into the processing list of that queue (nil when none)
    def take_low(queue, worker_id)
      ["LMOVE", Keys.low(queue), Keys.processing(queue, worker_id), "LEFT", "RIGHT"]
    end

    def take_blocking(queue, worker_id, timeout)
      ["BLMOVE", queue, Keys.processing(queue, worker_id), "LEFT", "RIGHT", timeout]
    end

    # the job is answered: the processing list held it alone
    def release(queue, worker_id)
      ["DEL", Keys.processing(queue, worker_id)]
    end

    # what a processing list still holds, back to the head of its queue
    def give_back_all(queue, worker_id)
      ["EVAL", GIVE_BACK_ALL, 2, Keys.processing(queue, worker_id), queue]
    end

    # a clean stop: jobs still held go back to their queues, the worker is forgotten
    def unregister(worker_id, queues)
      queues.map { |q| give_back_all(q, worker_id) } +
        [["SREM", Keys::WORKERS, *queues.map { |q| entry(q, worker_id) }],
         ["DEL", Keys.alive(worker_id)]]
    end
  end
end
