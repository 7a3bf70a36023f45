# frozen_string_literal: true

require "tempest/worker/body"
require "tempest/worker/session"

module Tempest
  # What a handler knows about its job, and how it answers.
  #
  # action, job_id (as the job carries it), respond_to ("host:port" or nil), worker, and for
  # `url` jobs env (method, url, headers, body...).
  class Context
    attr_reader :worker, :respond_to, :job_id, :env, :answered, :open_stream
    attr_accessor :action

    def initialize(worker, action, respond_to, job_id, env = nil)
      @worker = worker
      @action = action
      @respond_to = respond_to
      @job_id = job_id
      @env = env
      @answered = 0
      @open_stream = nil
      @session = nil
    end

    # The request's Session, or nil without tempestd's [front] session_cookie.
    def session
      if @session.nil?
        info = (@env || {})["session"]
        if info.is_a?(Hash) && Session.valid_id?(info["id"])
          @session = Session.new(@worker.redis, info["id"], info["ttl"] || Session::DEFAULT_TTL,
                                 cluster: @worker.cluster?)
        end
      end
      @session
    end

    # The request body as a Tempest::Body (IO-like: read, gets, each, close, size), wherever it
    # is: spooled by tempestd to a file on this host (env "body_file") or to Redis ("body_key",
    # its chunks fetched as they are read), or inline in the job ("body", "body_base64"). With a
    # block, yields it and closes it after. Raises Tempest::BodyGone (here for a missing file,
    # while reading for a missing chunk, a short body or another sha256).
    def body
      io = Body.open(@env, @worker.redis)
      return io unless block_given?

      begin
        yield io
      ensure
        io.close
      end
    end

    # Send an answer (any JSON value; for url jobs [status, headers, body]). May be called
    # several times. Returns false when nobody waits (no respond_to).
    def answer(data)
      @answered += 1
      if @session&.regenerated? && @action == "url"
        data = Context.with_header(data, Session::HEADER, @session.id)
      end
      @worker.send_command(@respond_to, @action, @job_id, JSON.generate(data))
    end

    # Pass the job on: [action, args, respond_to, job_id] pushed to queue; the worker that
    # takes it answers the waiting client. The handler sends no answer itself.
    def forward(queue, action, *args)
      @answered += 1
      @worker.push(queue, JSON.generate([action, args, @respond_to, @job_id]))
      nil
    end

    # Fan out: parts are [queue, action, args] triples; returns their answers (decoded JSON)
    # in the parts' order, nil for a part that did not answer within timeout seconds.
    def gather(parts, timeout: 5.0)
      raise ArgumentError, "gather needs a job with respond_to" unless @respond_to

      @worker.gather(@respond_to, parts, timeout)
    end

    # Begin a streamed answer: the head now, the body with write, then close. With a block,
    # yields the stream, closes it after the block, aborts it if the block raises.
    def stream(status = 200, headers = {})
      head = [status, headers || {}]
      head = Context.with_header(head, Session::HEADER, @session.id) if @session&.regenerated?
      @answered += 1
      @worker.send_command(@respond_to, "stream", @job_id, JSON.generate(head))
      @open_stream = Stream.new(self)
      return @open_stream unless block_given?

      begin
        yield @open_stream
      rescue Exception # rubocop:disable Lint/RescueException
        @open_stream.abort
        raise
      end
      @open_stream.close
      nil
    end

    # [status, headers, body] with one more header (headers a Hash, a list of pairs, or missing)
    def self.with_header(answer, name, value)
      return answer unless answer.is_a?(Array) && !answer.empty?

      answer = answer.dup
      headers = answer[1]
      headers = case headers
                when Hash then headers.merge(name => value)
                when Array then headers + [[name, value]]
                when nil then { name => value }
                else return answer
                end
      answer[1] = headers
      answer
    end
  end

  # The body of a streamed answer (Context#stream): raw chunks on the answer endpoint.
  class Stream
    def initialize(context)
      @context = context
      @closed = false
    end

    def closed? = @closed

    # send a piece of the body (a String: its bytes are sent as they are)
    def write(data)
      raise IOError, "write to a closed stream" if @closed

      data = data.to_s
      @context.worker.send_command(@context.respond_to, "chunk", @context.job_id, data.b) unless data.empty?
      self
    end
    alias << write

    # end the body
    def close = finish

    # give up: tempestd cuts the client's body (no last chunk), so it can tell
    def abort = finish("abort")

    private

    def finish(*how)
      return if @closed

      @closed = true
      @context.worker.send_command(@context.respond_to, "end", @context.job_id, *how)
      nil
    end
  end
end
