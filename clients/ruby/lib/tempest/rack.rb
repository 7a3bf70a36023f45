# frozen_string_literal: true

require "base64"
require "optparse"
require "tempest/worker"

module Tempest
  # The Rack gateway: any Rack application (a config.ru: Sinatra, Roda, Hanami, Rails...) as a
  # tempest worker, the Ruby counterpart of the Python library's tempest.wsgi. A url job's env
  # becomes a Rack env (Rack 2.2's SPEC, the version Debian bookworm ships; Rack 3 apps run too,
  # see docs/gateways.md); the application's status, headers and body become the answer
  # [status, [[name, value], ...], body], the body a string when it is UTF-8, else
  # {"base64": ...}. A body without Content-Length that is not an Array is a streamed answer,
  # a chunk per string it yields. Run one with:
  #
  #   clients/ruby/bin/tempest-rack config.ru --queue tempest
  #
  # or from code:
  #
  #   worker = Tempest::Worker.new("tempest")
  #   worker.on("url", Tempest::Rack.handler(app, worker.logger))
  #   worker.run
  #
  # The env follows tempest.wsgi's rules: SERVER_NAME and SERVER_PORT from the Host header,
  # REMOTE_ADDR from the job's remote_addr, every header as HTTP_* but those whose name has a
  # "_", CONTENT_LENGTH the body's real length, the session as tempest.session. It differs
  # where Rack does: PATH_INFO stays percent-encoded as sent (as WEBrick and Puma pass it),
  # values with non-ASCII bytes are those bytes, binary (ASCII-8BIT), an IPv6 SERVER_NAME keeps
  # its brackets (an authority). No hijacking (rack.hijack? false).
  module Rack
    SPEC_VERSION = [1, 3].freeze # rack.version of Rack 2.2's SPEC (Rack 3.1's Rack::VERSION is a String)
    SPECIAL_HEADERS = { "content-type" => "CONTENT_TYPE", "content-length" => "CONTENT_LENGTH" }.freeze
    ERROR_ANSWER = [500, { "Content-Type" => "text/plain" }, "500 Internal Server Error\n"].freeze
    GONE_ANSWER = [410, { "Content-Type" => "text/plain" }, "410 Gone\n"].freeze
    USAGE = "usage: tempest-rack CONFIG.ru [--queue NAME]... [--redis-url URL] [--plain] [--env NAME] [--chdir DIR]"

    module_function

    # The Rack env of a url job's env (a Hash, unfrozen). context: the job's Tempest::Context
    # (rack.input reads its body, spooled or not; tempest.context, tempest.session), or nil
    # for an inline body only. The caller closes env["rack.input"].
    def env(job, context = nil)
      path, query = target(job["url"])
      headers = job["headers"].is_a?(Hash) ? job["headers"] : {}
      input = context ? context.body : Body.open(job, nil)
      name, port = server(headers["host"].to_s)
      env = {
        "REQUEST_METHOD" => (job["method"] || "GET").to_s,
        "SCRIPT_NAME" => "",
        "PATH_INFO" => cgi(path),
        "QUERY_STRING" => cgi(query),
        "SERVER_NAME" => cgi(name),
        "SERVER_PORT" => port,
        "SERVER_PROTOCOL" => "HTTP/1.1",
        "rack.version" => SPEC_VERSION,
        "rack.url_scheme" => "http", # what tempestd serves; a proxy's X-Forwarded-Proto is the app's to trust
        "rack.input" => input,
        "rack.errors" => $stderr,
        "rack.multithread" => false,
        "rack.multiprocess" => true,
        "rack.run_once" => false,
        "rack.hijack?" => false
      }
      env["CONTENT_LENGTH"] = input.size.to_s if input.size.positive? || headers.key?("content-length")
      env["REMOTE_ADDR"] = cgi(job["remote_addr"]) if job["remote_addr"].is_a?(String) && !job["remote_addr"].empty?
      headers.each do |header, value|
        next if header.include?("_")

        key = SPECIAL_HEADERS.fetch(header) { "HTTP_#{header.upcase.tr('-', '_')}" }
        env[key] = cgi(value.to_s) unless key == "CONTENT_LENGTH" # the body's real length, set above
      end
      env["HTTP_VERSION"] ||= env["SERVER_PROTOCOL"] # as Rack 2.2's WEBrick handler: Sinatra's redirect reads it
      if context
        env["tempest.context"] = context
        env["tempest.session"] = context.session # nil without [front] session_cookie
      end
      env
    end

    # Run app on one url job and answer it through context: one answer, or a streamed answer
    # for a body without Content-Length that is not an Array. The body is closed in every case.
    # An exception is logged in one line (class, message, where) and answered 500, or cuts the
    # stream it began; nothing of it reaches the client. Returns nil (the job is answered).
    def call(app, job, context, logger)
      request = env(job, context)
      input = request["rack.input"] # kept: middleware may replace the env's (Rack::Lint does)
      begin
        status, headers, body = app.call(request)
        respond(context, status.to_i, headers, body)
      ensure
        input.close
      end
      nil
    rescue StandardError, ScriptError => e
      failed(context, logger, job, e)
      nil
    end

    # A url handler (for Worker#on("url", ...)) that runs the Rack application app.
    def handler(app, logger)
      ->(context, job) { call(app, job, context, logger) }
    end

    # The application of a rackup file (config.ru), or of a .rb file that defines the class
    # its name says (Rack::Builder.parse_file's rules); requires rack.
    def load(path)
      require "rack"
      loaded = ::Rack::Builder.parse_file(path)
      loaded.is_a?(Array) ? loaded.first : loaded # Rack 2: [app, options]; Rack 3: app
    end

    # tempest-rack: serve a rackup file; returns the exit status (2: a usage or loading error).
    def main(argv)
      options = parse(argv)
      return options if options.is_a?(Integer)

      begin
        Dir.chdir(options[:chdir]) if options[:chdir]
      rescue SystemCallError => e
        warn("tempest-rack: --chdir #{options[:chdir]}: #{e.message}")
        return 2
      end
      ENV["RACK_ENV"] = options[:env] if options[:env] # before the app is loaded: Sinatra reads it then
      app = load_or_say(options[:config])
      return 2 if app.nil?

      worker = Worker.new(options[:queues].empty? ? "tempest" : options[:queues],
                          redis_url: options[:redis_url], reliable: options[:plain] ? false : nil)
      worker.logger.progname = "tempest-rack"
      worker.on("url", handler(app, worker.logger))
      worker.run
      0
    end

    # the path and the query of a request target (an absolute-form one: its path)
    def target(url)
      url = url.is_a?(String) && !url.empty? ? url : "/"
      url = url.sub(%r{\A[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*}, "") unless url.start_with?("/")
      path, _, query = url.partition("?")
      [path.start_with?("/") ? path : "/#{path}", query]
    end

    # (SERVER_NAME, SERVER_PORT) from the Host header: localhost and 80 without one
    def server(host)
      name, colon, port = host.rpartition(":")
      return [name, port] if !colon.empty? && port.match?(/\A\d+\z/) && !name.empty? && !name.end_with?(":")

      [host.empty? ? "localhost" : host, "80"]
    end

    # a CGI value as Rack's SPEC wants it: the request's bytes (the front gives them as
    # ISO-8859-1 code points, as WSGI's environ has them), binary when not ASCII
    def cgi(value)
      return value if value.ascii_only?

      value.encode(Encoding::ISO_8859_1).b
    rescue EncodingError # a code point over 255: not from the front; its UTF-8 bytes
      value.b
    end

    # a Rack headers object (a Hash; Rack 2 "\n"-joined values, Rack 3 Arrays) as a list of
    # [name, value] pairs, each value of a header on its own line; rack.* headers are the
    # server's and not sent
    def answer_headers(headers)
      pairs = []
      headers.each do |name, value|
        name = name.to_s
        next if name.start_with?("rack.")

        (value.is_a?(Array) ? value : value.to_s.split("\n")).each { |item| pairs << [text(name), text(item.to_s)] }
      end
      pairs
    end

    def respond(context, status, headers, body)
      unless body.respond_to?(:each)
        raise TypeError, "the body (#{body.class}) does not respond to each (Rack 3 streaming bodies are not supported)"
      end

      headers = answer_headers(headers)
      if context.respond_to && !body.is_a?(Array) && headers.none? { |name, _| name.casecmp?("content-length") }
        context.stream(status, headers) { |out| body.each { |part| out.write(part) } }
      else
        data = String.new(encoding: Encoding::BINARY)
        body.each { |part| data << part.b }
        context.answer([status, headers, answer_body(data)])
      end
    ensure
      body.close if body.respond_to?(:close)
    end

    def answer_body(data)
      text = data.dup.force_encoding(Encoding::UTF_8)
      text.valid_encoding? ? text : { "base64" => Base64.strict_encode64(data) }
    end

    # a String for JSON: UTF-8 as it is, other bytes read as ISO-8859-1 (as WSGI's headers are)
    def text(value)
      utf8 = value.dup.force_encoding(Encoding::UTF_8)
      utf8.valid_encoding? ? utf8 : value.b.encode(Encoding::UTF_8, Encoding::ISO_8859_1)
    end

    # a request body gone (BodyGone: the request is over, its answer dropped anyway) is a
    # warning and a 410; any other exception an error and a 500
    def failed(context, logger, job, error)
      where = Array(error.backtrace).first || "no backtrace"
      message = error.message.to_s.gsub(/\s*\n\s*/, " ")
      request = "#{job['method']} #{job['url']} (job #{context.job_id})"
      if error.is_a?(BodyGone)
        logger.warn("#{request}: its body is gone: #{message}")
      else
        logger.error("#{request} failed: #{error.class}: #{message} (#{where})")
      end
      stream = context.open_stream
      if stream
        stream.abort unless stream.closed? # its head is gone: the client's body is cut
      elsif context.answered.zero?
        context.answer(error.is_a?(BodyGone) ? GONE_ANSWER : ERROR_ANSWER)
      end
    end

    def parse(argv)
      options = { queues: [], redis_url: nil, plain: false, env: nil, chdir: nil }
      parser = OptionParser.new do |opts|
        opts.banner = USAGE
        opts.on("-q", "--queue NAME", "queue to take jobs from (repeatable; default: tempest)") do |queue|
          options[:queues] << queue
        end
        opts.on("--redis-url URL", "default: TEMPEST_REDIS_URL, else redis://127.0.0.1:6379/0") do |url|
          options[:redis_url] = url
        end
        opts.on("--plain", "plain BLPOP instead of reliable delivery: a job is lost if its worker dies") do
          options[:plain] = true
        end
        opts.on("-E", "--env NAME", "RACK_ENV for the app (production...), as rackup -E sets it") do |name|
          options[:env] = name
        end
        opts.on("--chdir DIR", "change to this directory first (config.ru's requires are relative to it)") do |dir|
          options[:chdir] = dir
        end
        opts.on("-h", "--help", "this help") do
          $stdout.puts(opts)
          return 0
        end
      end
      rest = parser.parse(argv)
      return options.merge(config: rest.first) if rest.size == 1

      warn("tempest-rack: one rackup file expected, got #{rest.size}\n#{USAGE}")
      2
    rescue OptionParser::ParseError => e
      warn("tempest-rack: #{e.message}\n#{USAGE}")
      2
    end

    def load_or_say(config)
      load(config)
    rescue LoadError => e
      if e.path == "rack"
        warn("tempest-rack: rack is not installed (Debian: apt-get install ruby-rack; else gem install rack)")
      else
        warn("tempest-rack: cannot load #{config}: #{e.class}: #{e.message.to_s.lines.first.to_s.chomp}")
      end
      nil
    rescue StandardError, ScriptError => e
      warn("tempest-rack: cannot load #{config}: #{e.class}: #{e.message.to_s.lines.first.to_s.chomp}")
      nil
    end
    private_class_method :target, :server, :cgi, :answer_headers, :respond, :answer_body, :text, :failed,
                         :parse, :load_or_say
  end
end
