# frozen_string_literal: true

require "json"
require "openssl"
require "uri"
require "logger"
require "redis"
require "securerandom"
require "set"
require "socket"
require "tempest/worker/version"
require "tempest/worker/keys"
require "tempest/worker/cluster"
require "tempest/worker/reliable"
require "tempest/worker/session"
require "tempest/worker/publisher"
require "tempest/worker/context"

module Tempest
  # A Redis URL for a log line: its passwords (user info, password=, sentinel_password=,
  # ssl_password=) replaced by ***, as tempestd prints URLs.
  def self.redacted(url)
    url.to_s.sub(%r{\A([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@}, '\1:***@')
       .gsub(/([?&](?:password|sentinel_password|ssl_password)=)[^&\s]*/, '\1***')
  end

  TLS_PARAMS = %w[ssl_ca_certs ssl_certfile ssl_keyfile ssl_cert_reqs ssl_check_hostname].freeze

  # redis-rb's options for a rediss:// URL's query parameters, named as tempestd (redis-py)
  # takes them: ssl_ca_certs (a CA file instead of the system's), ssl_certfile and ssl_keyfile
  # (a client certificate), ssl_cert_reqs=none (no verification), ssl_check_hostname=no (the
  # chain verified, not the host name).
  def self.tls_options(url)
    uri = URI.parse(url)
    return {} unless uri.scheme == "rediss"

    { ssl: true, ssl_params: ssl_params(URI.decode_www_form(uri.query || "").to_h) }
  end

  # redis-rb's ssl_params for those query parameters (rediss://, redis+cluster://...?ssl=yes,
  # redis+sentinel://...?ssl=yes or sentinel_ssl=yes)
  def self.ssl_params(query)
    params = {}
    params[:ca_file] = query["ssl_ca_certs"] if query["ssl_ca_certs"]
    if query["ssl_certfile"]
      params[:cert] = OpenSSL::X509::Certificate.new(File.read(query["ssl_certfile"]))
      params[:key] = OpenSSL::PKey.read(File.read(query["ssl_keyfile"] || query["ssl_certfile"]))
    end
    params[:verify_mode] = OpenSSL::SSL::VERIFY_NONE if query["ssl_cert_reqs"] == "none"
    params[:verify_hostname] = false if query.key?("ssl_check_hostname") && !yes?(query["ssl_check_hostname"])
    params
  end

  # A yes/no query parameter, as tempestd reads them (yes, true, 1, on).
  def self.yes?(value) = value.to_s.match?(/\A(yes|true|1|on)\z/i)

  # redis-rb's options for redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
  # (sentinel_password and sentinel_username in the query are the Sentinels' credentials, ssl=yes
  # TLS to the master, sentinel_ssl=yes to the Sentinels, with the same ssl_* parameters): it
  # asks them for the master at each connection and checks its ROLE, so a failover is followed.
  def self.sentinel_options(url)
    match = %r{\Aredis\+sentinel://(?:([^@/]*)@)?([^/?]+)/([^/?]+)(?:/(\d+))?/?(?:\?(.*))?\z}.match(url)
    raise ArgumentError, "expected redis+sentinel://host:port[,host:port...]/service[/db]" unless match

    userinfo, hosts, service, db, query = match.captures
    params = URI.decode_www_form(query || "").to_h
    sentinels = hosts.split(",").map do |address|
      host, port = address.split(":", 2)
      { host: host, port: Integer(port || 26_379, 10), username: params["sentinel_username"],
        password: params["sentinel_password"] }.compact
    end
    options = { host: URI.decode_www_form_component(service), tempest_sentinels: sentinels, role: :master,
                db: Integer(db || 0, 10), connector: SentinelConnector,
                sentinel_tls: yes?(params["sentinel_ssl"]) ? { ssl: true, ssl_params: ssl_params(params) } : { ssl: false } }
    options.merge!(ssl: true, ssl_params: ssl_params(params)) if yes?(params["ssl"])
    user, password = (userinfo || "").split(":", 2).map { |part| URI.decode_www_form_component(part) }
    options[:username] = user unless user.nil? || user.empty?
    options[:password] = password unless password.nil? || password.empty?
    options
  end

  # redis-rb 4's Sentinel connector, whose clients of the Sentinels take the master's options
  # (its TLS with them): here the Sentinels' own TLS (sentinel_ssl) instead. Given as :connector,
  # as redis-rb makes its own when :sentinels is set: the Sentinels are in :tempest_sentinels.
  class SentinelConnector < Redis::Client::Connector::Sentinel
    def initialize(options)
      @sentinel_tls = options.fetch(:sentinel_tls)
      # the Sentinels' clients are made of these options: plain clients
      plain = options.reject { |key, _| %i[connector sentinel_tls tempest_sentinels].include?(key) }
      super(plain.merge(sentinels: options.fetch(:tempest_sentinels)))
    end

    def sentinel_detect(&block)
      master = @options
      @options = master.merge(@sentinel_tls)
      super(&block)
    ensure
      @options = master
    end
  end

  # The URL without those parameters (redis-rb does not know them).
  def self.without_tls_params(url)
    uri = URI.parse(url)
    return url unless uri.query

    kept = URI.decode_www_form(uri.query).reject { |key, _| TLS_PARAMS.include?(key) }
    uri.query = kept.empty? ? nil : URI.encode_www_form(kept)
    uri.to_s
  end

  # Takes jobs from one or several queues and runs the handler of each job's action; answers
  # go to the job's respond_to, tempestd's answer endpoint, over one kept connection per
  # endpoint. Reliable delivery is the default (BLMOVE into a processing list of this worker;
  # plain BLPOP with reliable: false or TEMPEST_RELIABLE=0); low-priority jobs
  # (tempest:low:{<queue>}) are taken once the queues are empty; a url job taken past its
  # env's deadline is dropped unrun.
  #
  #   worker = Tempest::Worker.new("tempest")
  #   worker.on("url") { |context, env| [200, { "Content-Type" => "text/plain" }, "Hello"] }
  #   worker.run
  class Worker
    DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
    POLL_TIMEOUT = 1 # seconds a BLPOP blocks, so that a stop is seen within it
    RECONNECT_MIN = 0.1
    RECONNECT_MAX = 2.0 # seconds between reconnection attempts, at most (0.1 s doubling)
    # the error replies of a Redis that will answer again soon, retried as a lost connection is:
    # a cluster failing over or migrating a slot, a replica's sync, a Redis loading its data
    PASSING_ERRORS = %w[CLUSTERDOWN TRYAGAIN MASTERDOWN LOADING].freeze
    ANSWER_ACTIONS = %w[url ws].freeze # always answers on an endpoint: never declared
    GATHER_TTL = 300
    SPREAD_TIMEOUT = 0.25 # seconds a plain worker on queues in several Cluster slots blocks on the first
    # InitialSetupError: no node of a cluster told its slots (the cluster is away)
    # OpenSSL::SSL::SSLError: a TLS handshake that fails (a certificate refused), which redis-rb
    # does not wrap: retried as a lost connection, not a crash
    CONNECTION_ERRORS = [Redis::BaseConnectionError, Redis::Cluster::InitialSetupError, SystemCallError,
                         IOError, OpenSSL::SSL::SSLError].freeze
    ERROR_ANSWER = { 500 => "Internal Server Error", 501 => "Not Implemented" }.freeze
    EXPIRED_LOG_EVERY = 10.0 # seconds between two info lines about jobs dropped past their deadline

    # processed: the jobs run; expired: url jobs dropped unrun, taken past their deadline
    attr_reader :queues, :redis_url, :handlers, :redis, :worker_id, :processed, :expired, :heartbeat
    attr_accessor :logger

    # queues: a name or a list of names. redis_url: default TEMPEST_REDIS_URL, else
    # redis://127.0.0.1:6379/0. answer_password: default TEMPEST_ANSWER_PASSWORD.
    # reliable: take jobs into a processing list of this worker, with a heartbeat of
    # `heartbeat` seconds, so that tempestd gives them back if the worker dies; default true,
    # unless TEMPEST_RELIABLE is 0, false, no or off (an explicit true or false wins over it).
    def initialize(queues = "tempest", redis_url: nil, answer_password: nil, reliable: nil,
                   heartbeat: 15.0, logger: nil)
      @queues = Array(queues).map(&:to_s)
      raise ArgumentError, "a worker needs a queue" if @queues.empty?

      @redis_url = redis_url || env("TEMPEST_REDIS_URL") || DEFAULT_REDIS_URL
      @answer_password = answer_password || env("TEMPEST_ANSWER_PASSWORD")
      @reliable = reliable.nil? ? Worker.reliable_from_env(ENV["TEMPEST_RELIABLE"]) : reliable ? true : false
      @heartbeat = heartbeat.to_f
      @logger = logger || default_logger
      @handlers = {}
      @stopping = false
      @processed = 0
      @expired = 0
      @expired_logged = nil
      # the queue connection, also the handlers' (sessions, publish, forward, gather): the
      # worker is sequential. No automatic retry: a retried BLPOP or RPUSH could lose or
      # repeat a job.
      @redis = connect(@redis_url)
      @cluster = Cluster.url?(@redis_url)
      # on a cluster, BLPOP refuses keys of several slots: the queues are then taken one by one
      @spread = @cluster && (@queues + @queues.map { |queue| Keys.low(queue) }).map { |key| Cluster.slot(key) }.uniq.size > 1
      @endpoints = {}
      @publisher = nil
      @worker_id = "#{Socket.gethostname}:#{Process.pid}:#{SecureRandom.hex(3)}"
      @registered = false
      refuse_split_queues if @cluster && @reliable
    end

    # reliable delivery unless the variable says 0, false, no or off (the default when unset)
    def self.reliable_from_env(value) = !value.to_s.strip.match?(/\A(0|false|no|off)\z/i)

    # an error reply that a moment cures (redis-rb raises Redis::CommandError with the reply's
    # text, "CLUSTERDOWN The cluster is down", on a cluster as on one Redis)
    def self.passing?(error) = error.message.start_with?(*PASSING_ERRORS)

    def reliable? = @reliable
    def cluster? = @cluster
    def stopping? = @stopping

    # Register the handler of an action: a block, or anything that responds to call. It gets
    # (context, *args), for url jobs (context, env). Its value, unless nil, is the answer,
    # when the handler did not answer itself (answer, stream or forward).
    def on(action, handler = nil, &block)
      handler ||= block
      raise ArgumentError, "on(#{action.inspect}) needs a handler" unless handler.respond_to?(:call)

      @handlers[action.to_s] = handler
    end

    # Take and run jobs until stop, SIGTERM or SIGINT; the job in hand is finished first.
    def run(install_signals: true)
      if install_signals
        %w[TERM INT].each { |signal| Signal.trap(signal) { @stopping = true } }
      end
      mode = @reliable ? "reliable, id #{@worker_id}" : "not reliable"
      @logger.info("worker on #{@queues.join(',')} (#{Tempest.redacted(@redis_url)}, #{mode}): #{@handlers.keys.join(', ')}")
      heart = start_heart if @reliable
      begin
        take_loop
      ensure
        if heart
          stop_heart(heart)
          unregister
        end
      end
      expired = @expired.positive? ? " (#{@expired} dropped past their deadline)" : ""
      @logger.info("worker stopped after #{@processed} jobs#{expired}")
      self
    end

    # Ask run to return once the job in hand is finished.
    def stop
      @stopping = true
    end

    # Run the handler of one raw job (the JSON envelope).
    def process(raw)
      begin
        action, args, respond_to, job_id = decode_job(raw)
      rescue StandardError => e # not JSON, invalid UTF-8, too deep, not a job
        @logger.error("dropped malformed job #{raw.to_s[0, 200].inspect}: #{e.message}")
        return
      end
      env = action == "url" && args[0].is_a?(Hash) ? args[0] : nil
      return expire(job_id, env["deadline"]) if env && past?(env["deadline"])

      @processed += 1
      context = Context.new(self, action, respond_to, job_id, env)
      handler = @handlers[action]
      if handler.nil?
        @logger.error("no handler for action #{action.inspect} (job #{job_id})")
        return answer_error(context, 501)
      end
      begin
        result = handler.call(context, *args)
        context.answer(result) unless result.nil? || context.answered.positive?
      rescue StandardError, ScriptError => e
        @logger.error("handler of #{action.inspect} failed on job #{job_id}: #{e.class}: #{e.message}\n  " +
                      Array(e.backtrace).first(15).join("\n  "))
        stream = context.open_stream
        stream.abort if stream && !stream.closed? # its head is gone: the client's body is cut
        answer_error(context, 500)
      end
    end

    # Send one command (answer, stream, chunk, end) to the answer endpoint respond_to;
    # false without one. Errors are logged, never raised: the request then times out.
    def send_command(respond_to, name, job_id, *rest)
      return false unless respond_to

      command = [name, job_id.is_a?(String) ? job_id : job_id.to_s, *rest]
      attempt = 0
      fresh = true
      begin
        attempt += 1
        connection, fresh = endpoint(respond_to)
        connection.call(*command)
      rescue Redis::CommandError => e # the endpoint never refuses an answer: a password problem, say
        @logger.warn("#{respond_to} refused #{name} #{command[1]}: #{e.message}")
      rescue *CONNECTION_ERRORS => e
        drop_endpoint(respond_to)
        retry if !fresh && attempt == 1 # a kept connection gone stale: once more on a new one
        @logger.warn("cannot send #{name} #{command[1]} to #{respond_to}: #{e.message}")
      end
      true
    end

    # RPUSH an encoded job (never retried: a retried RPUSH may push twice).
    def push(queue, job)
      @redis.call("RPUSH", queue, job)
    end

    # The fan-out of Context#gather (docs/protocol.md, "Fan-out and gather").
    def gather(respond_to, parts, timeout)
      gather_id = SecureRandom.urlsafe_base64(16)
      key = Keys.gather(gather_id)
      results = Array.new(parts.size)
      missing = Set.new(0...parts.size)
      begin
        @redis.call("XADD", key, "*", "part", "-1")
        @redis.call("EXPIRE", key, GATHER_TTL)
        parts.each_with_index do |(queue, action, args), index|
          args = args.is_a?(Array) ? args : [args]
          push(queue, JSON.generate([action, args, respond_to, "gather:#{gather_id}:#{index}"]))
        end
        deadline = now + timeout.to_f
        last = "0-0"
        while !missing.empty? && (left = deadline - now).positive?
          block = [1, ([left, POLL_TIMEOUT].min * 1000).to_i].max
          reply = @redis.call("XREAD", "BLOCK", block, "STREAMS", key, last)
          next unless reply

          reply[0][1].each do |entry_id, flat|
            last = entry_id
            gathered(Hash[*flat], results, missing)
          end
        end
      ensure
        begin
          @redis.call("DEL", key)
        rescue *CONNECTION_ERRORS
          nil # it expires by itself
        end
      end
      unless missing.empty?
        @logger.info("gather #{gather_id}: #{missing.size} of #{parts.size} parts missing after #{timeout}s")
      end
      results
    end

    # Publish data (any JSON value) to channel's subscribers (SSE, WebSocket), as an event
    # named event. Returns the stream id on a durable channel, else the number of
    # Redis subscribers.
    def publish(channel, data, event = nil)
      @publisher ||= Publisher.new(@redis)
      @publisher.publish(channel, data, event)
    end

    private

    def env(name)
      value = ENV[name]
      value.nil? || value.empty? ? nil : value
    end

    def default_logger
      logger = Logger.new($stderr, progname: "tempest-worker")
      logger.level = Logger::INFO
      logger
    end

    def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

    def connect(url, timeout: 5)
      if Cluster.url?(url) # made at its first command; redis-rb follows MOVED and ASK
        return Cluster::Lazy.new(**Cluster.options(url), timeout: timeout, reconnect_attempts: 0)
      end
      if url.start_with?("redis+sentinel://") # redis-rb asks the Sentinels at each (re)connection
        return Redis.new(**Tempest.sentinel_options(url), timeout: timeout, reconnect_attempts: 0)
      end

      Redis.new(url: Tempest.without_tls_params(url), timeout: timeout, reconnect_attempts: 0,
                **Tempest.tls_options(url))
    end

    # a queue named with a { (a hash tag of its own) has its processing list in another slot:
    # every LMOVE would be CROSSSLOT
    def refuse_split_queues
      @queues.each do |queue|
        next if Cluster.slot(queue) == Cluster.slot(Keys.processing(queue, @worker_id))

        raise ArgumentError, "queue #{queue.inspect}: on a Redis Cluster its processing list " \
                             "#{Keys.processing(queue, '<id>')} is in another slot (the { in its name): " \
                             "rename the queue, or take it with reliable: false"
      end
    end

    def take_loop
      delay = RECONNECT_MIN
      until @stopping
        begin
          register if @reliable && !@registered
          raw, queue = @reliable ? take_reliable : take
          delay = RECONNECT_MIN
        rescue *CONNECTION_ERRORS, Redis::CommandError => e
          if e.is_a?(Redis::CommandError) && !Worker.passing?(e) # e.g. WRONGTYPE: an operator must act
            @logger.error("Redis refused to give jobs: #{e.message}; retrying in #{RECONNECT_MAX}s")
            pause(RECONNECT_MAX)
            next
          end
          @registered = false # reliable: register again, and give back a job whose reply was lost
          @logger.warn("Redis unreachable (#{e.message}); retrying in #{delay}s")
          pause(delay)
          delay = [delay * 2, RECONNECT_MAX].min
          next
        end
        next if raw.nil?

        process(raw)
        release(queue) if @reliable
      end
    end

    # BLPOP and BLMOVE through call, not redis-rb's blpop/blmove: those re-send the command
    # after a lost connection, and a job whose reply was lost would be gone (the socket's
    # read timeout, 5 s, is above POLL_TIMEOUT). The queues first, then their low lists.
    def take
      return take_spread if @spread

      item = @redis.call("BLPOP", *@queues, *@queues.map { |queue| Keys.low(queue) }, POLL_TIMEOUT)
      item && [item[1], item[0]]
    end

    # queues in several slots of a cluster, where one BLPOP cannot name them all (CROSSSLOT):
    # each queue (LPOP), then each low list, then a short BLPOP on the first queue alone, so
    # that the others are looked at between the waits
    def take_spread
      (@queues + @queues.map { |queue| Keys.low(queue) }).each do |key|
        job = @redis.call("LPOP", key)
        return [job, key] if job
      end
      item = @redis.call("BLPOP", @queues.first, SPREAD_TIMEOUT)
      item && [item[1], item[0]]
    end

    # every queue (LMOVE), then their low lists (LMOVE into the processing list of that
    # queue), then the first queue blocks (BLMOVE; 0.1 s with several, the others polled
    # meanwhile): a low job waits at most that long on an idle worker
    def take_reliable
      @queues.each do |queue|
        job = @redis.call(*Reliable.take(queue, @worker_id))
        return [job, queue] if job
      end
      @queues.each do |queue|
        job = @redis.call(*Reliable.take_low(queue, @worker_id))
        return [job, queue] if job
      end
      queue = @queues.first
      timeout = @queues.size == 1 ? POLL_TIMEOUT : 0.1
      job = @redis.call(*Reliable.take_blocking(queue, @worker_id, timeout))
      job && [job, queue]
    end

    # after a lost connection, a job BLMOVEd whose reply never came may sit in a processing
    # list (it holds nothing else between jobs): it goes back to the head of its queue
    def register
      Reliable.beat(@worker_id, @queues, @heartbeat).each { |command| @redis.call(*command) }
      if @registered_before
        @queues.each { |queue| @redis.call(*Reliable.give_back_all(queue, @worker_id)) }
      end
      @registered = true
      @registered_before = true
    end

    def release(queue)
      @redis.call(*Reliable.release(queue, @worker_id))
    rescue *CONNECTION_ERRORS => e
      @logger.warn("cannot release the finished job of #{queue} (#{e.message}): it may be delivered again")
    end

    def unregister
      Reliable.unregister(@worker_id, @queues).each { |command| @redis.call(*command) }
    rescue *CONNECTION_ERRORS, Redis::CommandError => e
      @logger.warn("cannot unregister from Redis (#{e.message}): tempestd will give back what is left")
    end

    # the heartbeat thread: its own connection, so that a long handler does not stop it
    def start_heart
      @heart_lock = Mutex.new
      @heart_wake = ConditionVariable.new
      @heart_stop = false
      Thread.new do
        connection = connect(@redis_url)
        loop do
          @heart_lock.synchronize { @heart_wake.wait(@heart_lock, @heartbeat / 3) unless @heart_stop }
          break if @heart_stop
          next unless @registered

          begin
            Reliable.beat(@worker_id, @queues, @heartbeat).each { |command| connection.call(*command) }
          rescue *CONNECTION_ERRORS, Redis::CommandError => e
            @logger.debug("heartbeat failed: #{e.message}")
          end
        end
        connection.close
      end
    end

    def stop_heart(heart)
      @heart_lock.synchronize do
        @heart_stop = true
        @heart_wake.signal
      end
      heart.join(10) # no beat (which registers) after the unregistering
    end

    # sleep, but see a stop within 0.1 s
    def pause(seconds)
      deadline = now + seconds
      sleep([0.1, deadline - now].min) while !@stopping && now < deadline
    end

    def past?(deadline) = deadline.is_a?(Numeric) && Time.now.to_f > deadline

    # a job past its deadline: nobody waits for its answer any more; dropped, counted, logged
    # at info at most every EXPIRED_LOG_EVERY seconds (the others at debug)
    def expire(job_id, deadline)
      @expired += 1
      message = format("dropped job %s taken %.3fs past its deadline (%d dropped so far)", job_id,
                       Time.now.to_f - deadline, @expired)
      if @expired_logged.nil? || now - @expired_logged >= EXPIRED_LOG_EVERY
        @expired_logged = now
        @logger.info(message)
      else
        @logger.debug(message)
      end
    end

    def decode_job(raw)
      job = JSON.parse(raw)
      raise ArgumentError, "a job is a JSON list of four elements" unless job.is_a?(Array) && job.size == 4

      action, args, respond_to, = job
      unless action.is_a?(String) && args.is_a?(Array)
        raise ArgumentError, "a job's action is a string and its args a list"
      end
      raise ArgumentError, "a job's respond_to is 'host:port' or null" unless respond_to.nil? || respond_to.is_a?(String)

      job
    end

    # an HTTP error answer for a job nobody answered, so that no client waits for its
    # timeout; not for ws jobs. Under the job's action when this worker has a handler for it
    # (it declared it), else under url.
    def answer_error(context, status)
      return if context.action == "ws" || context.answered.positive?

      context.action = "url" unless @handlers.key?(context.action)
      context.answer([status, { "Content-Type" => "text/plain" }, "#{status} #{ERROR_ANSWER[status]}\n"])
    rescue StandardError => e
      @logger.error("cannot answer #{status} to job #{context.job_id}: #{e.message}")
    end

    def gathered(fields, results, missing)
      part = fields["part"].to_s
      return unless part.match?(/\A\d+\z/) && missing.include?(part.to_i)

      index = part.to_i
      begin
        results[index] = JSON.parse(fields["answer"].to_s)
      rescue JSON::ParserError
        @logger.warn("gather: part #{part} answered with something that is not JSON")
      end
      missing.delete(index)
    end

    # the kept connection to an answer endpoint, and whether it was just made; a new one
    # authenticates (redis-rb sends AUTH) and declares the handlers' actions
    def endpoint(respond_to)
      connection = @endpoints[respond_to]
      return [connection, false] if connection

      host, _, port = respond_to.rpartition(":")
      host = host.delete_prefix("[").delete_suffix("]")
      options = { host: host, port: Integer(port, 10), timeout: 10, reconnect_attempts: 0 }
      options[:password] = @answer_password if @answer_password
      connection = Redis.new(**options)
      declared = @handlers.keys.reject { |action| ANSWER_ACTIONS.include?(action) }.sort
      unless declared.empty?
        begin
          connection.call("ACTIONS", *declared)
        rescue Redis::CommandError => e
          @logger.warn("#{respond_to} refused ACTIONS #{declared.join(' ')}: #{e.message}")
        rescue *CONNECTION_ERRORS
          connection.close
          raise
        end
      end
      @endpoints[respond_to] = connection
      [connection, true]
    end

    def drop_endpoint(respond_to)
      connection = @endpoints.delete(respond_to)
      connection&.close
    rescue StandardError
      nil
    end
  end
end
