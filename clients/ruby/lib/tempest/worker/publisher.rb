# frozen_string_literal: true

require "digest/sha1"
require "json"
require "tempest/worker/keys"

module Tempest
  # Publishing to pub/sub channels as tempest/publish.py does: a plain PUBLISH of the legacy
  # message `[data]` or `[event, data]`; on a durable channel (one matching a pattern of
  # `tempest:pubsub:durable`, which tempestd writes) XADD and PUBLISH in one Lua script. When
  # tempestd relays sharded pub/sub (`tempest:pubsub:sharded` is "1"), SPUBLISH in both.
  class Publisher
    PUBLISH_DURABLE = <<~LUA
      local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
      redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
      return id
    LUA
    # the same with sharded pub/sub: the channel is in its stream's slot
    SPUBLISH_DURABLE = PUBLISH_DURABLE.sub("'PUBLISH'", "'SPUBLISH'")
    SHAS = { PUBLISH_DURABLE => Digest::SHA1.hexdigest(PUBLISH_DURABLE),
             SPUBLISH_DURABLE => Digest::SHA1.hexdigest(SPUBLISH_DURABLE) }.freeze
    CACHE_SECONDS = 5.0 # how long the durable patterns and the sharded flag are trusted
    BAD_FIELD = /[\r\n\0]/
    # fnmatchcase: '*' matches anything ('/' and a leading '.' too), no backslash escapes
    FNMATCH_FLAGS = File::FNM_DOTMATCH | File::FNM_NOESCAPE

    def initialize(redis)
      @redis = redis
      @cached_at = nil
      @patterns = []
      @sharded = false
    end

    def self.message(data, event = nil)
      if !event.nil? && (!event.is_a?(String) || BAD_FIELD.match?(event))
        raise ArgumentError, "bad event name #{event.inspect}"
      end

      JSON.generate(event.nil? ? [data] : [event, data])
    end

    # [[pattern, history], ...], read from Redis at most every CACHE_SECONDS
    def patterns
      refresh
      @patterns
    end

    # whether tempestd relays sharded pub/sub ([pubsub] sharded): then SPUBLISH
    def sharded?
      refresh
      @sharded
    end

    # two GETs, not one MGET: on a cluster the keys are in two slots
    def refresh
      now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return unless @cached_at.nil? || now - @cached_at > CACHE_SECONDS

      raw = @redis.get(Keys::DURABLE_CONFIG)
      @patterns = raw ? JSON.parse(raw) : []
      @sharded = @redis.get(Keys::SHARDED_CONFIG) == "1"
      @cached_at = now
    end

    def history(channel)
      found = patterns.find { |pattern, _| File.fnmatch?(pattern, channel, FNMATCH_FLAGS) }
      found && found[1]
    end

    # the stream id on a durable channel, else the number of Redis subscribers
    def publish(channel, data, event = nil)
      message = Publisher.message(data, event)
      kept = history(channel)
      if kept.nil?
        # SPUBLISH goes to the master of the channel's slot (redis-rb routes by its argument 1)
        return sharded? ? @redis.call("SPUBLISH", channel, message) : @redis.publish(channel, message)
      end

      script = sharded? ? SPUBLISH_DURABLE : PUBLISH_DURABLE
      args = [1, Keys.stream(channel), message, kept, channel]
      begin
        @redis.call("EVALSHA", SHAS[script], *args)
      rescue Redis::CommandError => e
        raise unless e.message.start_with?("NOSCRIPT")

        @redis.call("EVAL", script, *args)
      end
    end
  end
end
