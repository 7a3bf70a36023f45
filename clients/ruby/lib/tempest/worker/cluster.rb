# frozen_string_literal: true

require "delegate"
require "redis"
require "uri"

module Tempest
  # Redis Cluster (docs/protocol.md, section 7): redis-rb's own cluster client
  # (Redis.new(cluster: [...])) routes each command to its key's master, follows MOVED and ASK
  # (3 redirections at most) and reads the slots again after a node could not be reached.
  # What it does not do is left to the worker: a BLPOP on queues in several slots, or a RENAME
  # to another slot, which Redis refuses (CROSSSLOT).
  module Cluster
    SCHEME = "redis+cluster://"
    URL = %r{\Aredis\+cluster://(?:([^@/]*)@)?([^/?]+)(/[^?]*)?(?:\?(.*))?\z}.freeze

    module_function

    def url?(url) = url.to_s.start_with?(SCHEME)

    # redis-rb's options for redis+cluster://[[user]:password@]host:port[,host:port...][/][?ssl=yes&ssl_*=...]:
    # the seeds (any nodes: one live seed is enough), the credentials and TLS for every node.
    def options(url)
      match = URL.match(url)
      raise ArgumentError, "expected redis+cluster://host:port[,host:port...], not #{Tempest.redacted(url)}" unless match

      userinfo, hosts, path, query = match.captures
      unless [nil, "", "/", "/0"].include?(path)
        raise ArgumentError, "a Redis Cluster has database 0 only: no path after redis+cluster://host:port[,...]"
      end

      params = URI.decode_www_form(query || "").to_h
      options = { cluster: hosts.split(",").map { |address| node(address) } }
      user, password = (userinfo || "").split(":", 2).map { |part| URI.decode_www_form_component(part) }
      options[:username] = user unless user.nil? || user.empty?
      options[:password] = password unless password.nil? || password.empty?
      options.merge!(ssl: true, ssl_params: Tempest.ssl_params(params)) if params["ssl"].to_s.match?(/\A(yes|true|1)\z/i)
      options
    end

    def node(address)
      host, _, port = address.rpartition(":")
      host, port = address, "6379" if host.empty? || !port.match?(/\A\d+\z/)
      { host: host.delete_prefix("[").delete_suffix("]"), port: Integer(port, 10) }
    end

    # the slot of a key: CRC16 of its hash tag (the text between the first { and the next }),
    # or of the whole key, modulo 16384
    def slot(key)
      key = key.to_s
      open = key.index("{")
      close = open && key.index("}", open + 1)
      tag = close && close > open + 1 ? key[(open + 1)...close] : key
      Redis::Cluster::KeySlotConverter.convert(tag)
    end

    # redis-rb's cluster client asks the seeds for the slots when it is made: made at its first
    # command instead (and again after it failed), so that a worker started while the cluster
    # is away waits for it as it waits for a standalone Redis.
    class Lazy < Delegator
      def initialize(options)
        super(nil)
        @options = options
      end

      def __getobj__ = (@redis ||= Redis.new(**@options))

      def __setobj__(redis)
        @redis = redis
      end

      def close
        @redis&.close
        @redis = nil
      end
    end
  end
end
