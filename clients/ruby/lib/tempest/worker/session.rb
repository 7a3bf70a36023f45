# frozen_string_literal: true

require "json"
require "securerandom"
require "tempest/worker/keys"

module Tempest
  # A request's session: a Hash-like view of the Redis hash `session:<id>`, each field's value
  # the JSON list `[value]` (the 2012 format). Reads go to Redis every time (another worker may
  # have changed the session); every write refreshes the hash's TTL (EXPIRE).
  class Session
    HEADER = "X-Tempest-Session" # answer header: the new id after regenerate
    ID = /\A[A-Za-z0-9_-]{22}\z/ # 128 random bits, URL-safe base64
    DEFAULT_TTL = 14 * 24 * 3600

    attr_reader :id, :ttl

    def self.valid_id?(value) = value.is_a?(String) && ID.match?(value)
    def self.new_id = SecureRandom.urlsafe_base64(16)

    # cluster: the Redis is a Redis Cluster, where the session's two keys (the hash and its
    # grants) are in two slots
    def initialize(redis, id, ttl, cluster: false)
      @redis = redis
      @id = id
      @ttl = ttl.to_i
      @cluster = cluster
      @regenerated = false
    end

    def key = Keys.session(@id)
    def regenerated? = @regenerated

    def get(field, default = nil)
      raw = @redis.hget(key, field.to_s)
      raw.nil? ? default : decode(raw, default)
    end

    def [](field) = get(field)

    def []=(field, value)
      update(field => value)
    end

    # write several fields in one transaction (HSET then EXPIRE)
    def update(values)
      return if values.empty?

      flat = values.flat_map { |field, value| [field.to_s, JSON.generate([value])] }
      @redis.multi do |tx|
        tx.call("HSET", key, *flat)
        tx.call("EXPIRE", key, @ttl)
      end
      nil
    end

    def delete(field)
      @redis.hdel(key, field.to_s)
    end

    def key?(field) = @redis.hexists(key, field.to_s)
    alias include? key?

    # every field, as a Hash
    def all
      @redis.hgetall(key).to_h { |field, raw| [field, decode(raw, nil)] }
    end
    alias to_h all

    # forget every field and every grant (logout); the id stays: regenerate it too. One DEL
    # per key: on a cluster the two keys are in two slots.
    def clear
      @redis.call("DEL", key)
      @redis.call("DEL", Keys.grants(@id))
      nil
    end

    # a new id, the fields and grants kept: call it at login. The answer then carries
    # X-Tempest-Session, which tempestd turns into the new cookie. RENAMEs in one transaction;
    # on a cluster, where RENAME cannot cross slots, a copy, then the old keys deleted
    # (docs/protocol.md, section 7).
    def regenerate
      old = @id
      @id = Session.new_id
      @cluster ? copy(old) : move(old)
      @regenerated = true
      @id
    end

    private

    def move(old)
      @redis.multi do |tx|
        tx.call("RENAME", Keys.session(old), key)
        tx.call("RENAME", Keys.grants(old), Keys.grants(@id))
      end
    rescue Redis::CommandError => e # no such key: nothing written yet (the other RENAME ran)
      raise unless e.message.match?(/no such key/i)
    end

    def copy(old)
      fields = @redis.call("HGETALL", Keys.session(old))
      unless fields.empty?
        @redis.call("HSET", key, *fields)
        @redis.call("EXPIRE", key, @ttl)
      end
      patterns = @redis.call("SMEMBERS", Keys.grants(old))
      unless patterns.empty?
        @redis.call("SADD", Keys.grants(@id), *patterns)
        @redis.call("EXPIRE", Keys.grants(@id), @ttl)
      end
      @redis.call("DEL", Keys.session(old))
      @redis.call("DEL", Keys.grants(old))
    end

    def decode(raw, default)
      value = JSON.parse(raw)
      value.is_a?(Array) && !value.empty? ? value[0] : default
    rescue JSON::ParserError
      default
    end
  end
end
