# frozen_string_literal: true

# Hello world: answers every HTTP request on the queue given as first argument (default
# "tempest"), with Redis from TEMPEST_REDIS_URL. Run by tempestd from a [worker:NAME] section:
#
#   [worker:hello]
#   command = ruby clients/ruby/examples/hello.rb tempest
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "tempest/worker"

worker = Tempest::Worker.new(ARGV[0] || "tempest")
answers = 0
worker.on("url") do |_context, _env|
  answers += 1
  [200, { "Content-Type" => "text/plain" }, "Hello from ruby ##{answers}"]
end
worker.run
