# frozen_string_literal: true

require "digest/sha1"
require "json"
require "tempest/worker/keys"

module Tempest
  # Publishing to pub/sub channels as tempest/publish.py does: a plain PUBLISH of the legacy
  # message `[data]` or `[event, data]`; on a durable channel (one matching a pattern of
  # `tempest:pubsub:durable`, which tempestd writes) XADD and PUBLISH in one Lua script.
  class Publisher
    PUBLISH_DURABLE = <<~LUA
      local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
      redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
      return id
    LUA
    SHA = Digest::SHA1.hexdigest(PUBLISH_DURABLE)
    CACHE_SECONDS = 5.0
    BAD_FIELD = /[\r\n\0]/
    # fnmatchcase: '*' matches anything ('/' and a leading '.' too), no backslash escapes
    FNMATCH_FLAGS = File::FNM_DOTMATCH | File::FNM_NOESCAPE

    def initialize(redis)
      @redis = redis
      @cached_at = nil
      @patterns = []
    end

    def self.message(data, event = nil)
      if !event.nil? && (!event.is_a?(String) || BAD_FIELD.match?(event))
        raise ArgumentError, "bad event name #{event.inspect}"
      end

      JSON.generate(event.nil? ? [data] : [event, data])
    end

    # [[pattern, history], ...], read from Redis at most every CACHE_SECONDS
    def patterns
      now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      if @cached_at.nil? || now - @cached_at > CACHE_SECONDS
        raw = @redis.get(Keys::DURABLE_CONFIG)
        @patterns = raw ? JSON.parse(raw) : []
        @cached_at = now
      end
      @patterns
    end

    def history(channel)
      found = patterns.find { |pattern, _| File.fnmatch?(pattern, channel, FNMATCH_FLAGS) }
      found && found[1]
    end

    # the stream id on a durable channel, else the number of Redis subscribers
    def publish(channel, data, event = nil)
      message = Publisher.message(data, event)
      kept = history(channel)
      return @redis.publish(channel, message) if kept.nil?

      args = [1, Keys.stream(channel), message, kept, channel]
      begin
        @redis.call("EVALSHA", SHA, *args)
      rescue Redis::CommandError => e
        raise unless e.message.start_with?("NOSCRIPT")

        @redis.call("EVAL", PUBLISH_DURABLE, *args)
      end
    end
  end
end
