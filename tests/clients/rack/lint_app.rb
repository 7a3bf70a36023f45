# frozen_string_literal: true

require "digest"
require "json"

# The routes of lint.ru, one per point of the gateway under test. Bodies that record their
# close in CLOSED (one process: the worker is sequential), read back at /closes.
class LintApp
  CLOSED = []
  TEXT = { "Content-Type" => "text/plain" }.freeze

  # a body that yields its parts (calling a part that is a Proc: a pause, a failure) and
  # records its close
  class Body
    def initialize(name, parts)
      @name = name
      @parts = parts
    end

    def each
      @parts.each { |part| part.is_a?(Proc) ? part.call : yield(part) }
    end

    def close
      CLOSED << @name
    end
  end

  BINARY = { "Content-Type" => "application/octet-stream" }.freeze
  PAUSE = -> { sleep 0.2 }

  def call(env)
    case env["PATH_INFO"]
    when %r{/env\z} then json(describe(env))
    when %r{/echo\z} then json(echo(env["rack.input"]).merge("content_length" => env["CONTENT_LENGTH"],
                                                             "form" => form(env)))
    when "/raw" then raw(env)
    when "/binary" then [200, BINARY.merge("Content-Length" => "256"), [(0..255).to_a.pack("C*")]]
    when "/binary/stream" then [200, BINARY.dup, Body.new("binary-stream", ["\xff\x00".b, (128..255).to_a.pack("C*")])]
    when "/stream" then [200, TEXT.dup, Body.new("stream", ["one\n", PAUSE, "two\n", PAUSE, "three\n"])]
    when "/length" then [200, TEXT.merge("Content-Length" => "6"), Body.new("length", %w[le ngth])]
    when "/array" then [200, TEXT.dup, ["an ", "array"]]
    when "/fail/stream" then [200, TEXT.dup, Body.new("fail-stream", ["partial\n", -> { raise IOError, "broken feed" }])]
    when "/fail/length" then [200, TEXT.merge("Content-Length" => "9"), Body.new("fail-length", ["part", -> { raise "half" }])]
    when "/closes" then json(CLOSED.dup).tap { CLOSED.clear }
    when "/boom" then boom
    when "/headers" then headers
    when "/rack3/headers" then [200, { "set-cookie" => ["c=3", "d=4"], "x-multi" => %w[z w] }, ["ok"]]
    when "/rack3/streaming-body" then [200, {}, ->(stream) { stream.write("never") }]
    when "/lint-violation" then [200, TEXT.merge("X-Count" => 3), ["a header value that is not a String"]]
    when "/session" then session(env["tempest.session"])
    else [404, TEXT.dup, ["no route #{env['PATH_INFO']}"]]
    end
  end

  private

  def json(data)
    text = JSON.generate(data)
    [200, { "Content-Type" => "application/json", "Content-Length" => text.bytesize.to_s }, [text]]
  end

  # the env's CGI values ([value as UTF-8 or "hex:<its bytes>", its encoding]) and the rack.*
  # values a test checks
  def describe(env)
    cgi = env.reject { |key, _| key.include?(".") }.to_h do |key, value|
      utf8 = value.dup.force_encoding(Encoding::UTF_8)
      [key, [utf8.valid_encoding? ? utf8 : "hex:#{value.unpack1('H*')}", value.encoding.name]]
    end
    rack = %w[rack.version rack.url_scheme rack.multithread rack.multiprocess rack.run_once rack.hijack?]
    {
      "cgi" => cgi, "rack" => rack.to_h { |key| [key, env[key]] },
      "input_empty" => env["rack.input"].read == "", "errors" => env["rack.errors"].respond_to?(:puts),
      "job_id" => env["tempest.context"]&.job_id, "session" => !env["tempest.session"].nil?
    }
  end

  # how the body came in the job: inline (body, body_base64), spooled (body_file, body_key)
  def form(env)
    job = env["tempest.context"].env
    %w[body body_base64 body_file body_key].find { |key| job.key?(key) } || "none"
  end

  # the body read every way Rack lets an app read it, rewound in between
  def echo(input)
    reads = []
    [->(io) { drain { |buffer| io.read(16_384, buffer) } }, ->(io) { drain { io.gets } },
     ->(io) { String.new.tap { |data| io.each { |part| data << part } } }, ->(io) { io.read },
     ->(io) { io.read(nil) }].each do |read|
      reads << read.call(input)
      input.rewind
    end
    whole = reads.first
    { "size" => whole.bytesize, "sha256" => Digest::SHA256.hexdigest(whole), "encoding" => whole.encoding.name,
      "agree" => reads.uniq.size == 1 }
  end

  def drain
    data = String.new
    while (part = yield(String.new))
      data << part
    end
    data
  end

  # the request body back as it came, in its content type
  def raw(env)
    data = env["rack.input"].read
    [200, { "Content-Type" => env["CONTENT_TYPE"] || "application/octet-stream",
            "Content-Length" => data.bytesize.to_s }, [data]]
  end

  # Rack 2's several values of a header: one String, "\n" between them
  def headers
    [200, TEXT.merge("Set-Cookie" => "a=1; Path=/\nb=2", "X-Multi" => "x\ny", "Content-Length" => "2"), ["ok"]]
  end

  def boom
    raise ArgumentError, "boom: the secret detail"
  end

  def session(session)
    return [200, TEXT.dup, ["no session"]] if session.nil?

    count = session.get("count", 0) + 1
    session["count"] = count
    [200, TEXT.dup, ["count=#{count}"]]
  end
end
