# frozen_string_literal: true

# Test workers for tests/e2e/test_client_ruby.py, by role:
#
#   app.rb site QUEUE [GREET_QUEUE] [--reliable|--plain]   url jobs, by path (below); without
#                                                  either, the client's default (reliable,
#                                                  unless TEMPEST_RELIABLE says no)
#   app.rb greeter QUEUE                           answers greet jobs (forwarded by Python)
#
# A site's path .../digest[?reader=each|read|whole] reads the body with context.body (each,
# read(64K) in a loop, or read) and answers JSON {form, size, sha256}; BodyGone answers 410.
#
# TEMPEST_TEST_HEARTBEAT: the reliable worker's heartbeat in seconds.
$LOAD_PATH.unshift(File.expand_path("../../../clients/ruby/lib", __dir__))
require "digest"
require "tempest/worker"
require "uri"

role, queue, *rest = ARGV
reliable = rest.delete("--reliable") ? true : rest.delete("--plain") ? false : nil
worker = Tempest::Worker.new(queue, reliable: reliable,
                                    heartbeat: Float(ENV.fetch("TEMPEST_TEST_HEARTBEAT", "15")))
text = { "Content-Type" => "text/plain" }

def params(env)
  URI.decode_www_form(env["url"].partition("?")[2]).to_h
end

def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

# the body as the handler reads it: the form it came in (the env's key), its size and SHA-256
def digest(context, env, reader)
  form = %w[body_file body_key body_base64 body].find { |key| env.key?(key) } || "none"
  sha = Digest::SHA256.new
  size = 0
  context.body do |body|
    case reader
    when "whole" then blocks = [body.read]
    when "read" then blocks = Enumerator.new { |out| while (block = body.read(65_536)) do out << block end }
    else blocks = body.each
    end
    blocks.each do |block|
      sha << block
      size += block.bytesize
    end
  end
  [200, { "Content-Type" => "application/json" }, JSON.generate(form: form, size: size, sha256: sha.hexdigest)]
rescue Tempest::BodyGone => e
  [410, { "Content-Type" => "text/plain" }, "BodyGone: #{e.message}"]
end

case role
when "site"
  greet_queue = rest.first
  worker.on("url") do |context, env|
    path = env["url"].partition("?")[0]
    query = params(env)
    next digest(context, env, query["reader"]) if path.end_with?("/digest")

    case path
    when "/pid"
      [200, text, "ruby #{Process.pid}"]
    when "/slow" # marks that it started, then works for s seconds (signals do not cut it)
      worker.redis.rpush("started:#{queue}", Process.pid.to_s)
      deadline = monotonic + Float(query.fetch("s", "2"))
      sleep(0.05) while monotonic < deadline
      [200, text, "done by #{Process.pid}"]
    when "/record" # ?list=L&tag=T: RPUSH L "T <length of this job's processing list>"
      held = worker.redis.call("LLEN", "tempest:processing:{#{queue}}:#{worker.worker_id}")
      worker.redis.call("RPUSH", query["list"], "#{query['tag']} #{held}")
      [200, text, "recorded"]
    when "/stream"
      context.stream(200, text) do |out|
        %w[one two three].each do |word|
          out.write("#{word}\n")
          sleep(0.1)
        end
      end
    when "/abort" # a stream whose handler fails half-way: the body is cut
      out = context.stream(200, text)
      out.write("partial\n")
      raise "failed in the middle of a stream"
    when "/boom"
      raise "asked to fail"
    when "/session/write"
      context.session["user"] = query["v"]
      [200, text, "written #{context.session.id}"]
    when "/session/read"
      [200, { "Content-Type" => "application/json" }, JSON.generate(context.session.all)]
    when "/session/regenerate"
      old = context.session.id
      fresh = context.session.regenerate
      [200, text, "#{old} #{fresh}"]
    when "/publish"
      result = worker.publish(query["ch"], query.fetch("data", "hello from ruby"), query["event"])
      [200, text, result.to_s]
    when "/forward"
      context.forward(greet_queue, "greet", { "path" => path, "via" => Process.pid })
    when "/gather"
      queues = query["q"].split(",")
      parts = queues.each_with_index.map { |q, i| [q, "square", [q == "silent" ? -1 : i + 1]] }
      results = context.gather(parts, timeout: Float(query.fetch("timeout", "2")))
      missing = results.each_index.select { |i| results[i].nil? }
      [200, text.merge("X-Missing" => missing.join(",")), results.compact.sum.to_s]
    else
      [404, text, "no such path #{path}\n"]
    end
  end
when "greeter"
  worker.on("greet") do |_context, info|
    raise "asked to fail" if info["path"] == "/fail"

    [200, text, "ruby greeted #{info['path']} from #{info['via']}"]
  end
else
  abort("unknown role #{role}")
end
worker.run
