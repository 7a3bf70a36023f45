# The Ruby leg of the mixed tests: `finish` jobs get the HTTP answer that names the route taken.
# Usage: ruby finish.rb QUEUE
$LOAD_PATH.unshift(File.expand_path("../../../clients/ruby/lib", __dir__))
require "tempest/worker"

worker = Tempest::Worker.new(ARGV[0])
worker.on("finish") do |_context, info|
  [200, { "Content-Type" => "text/plain" }, "#{info['path']} via #{(info['via'] + ['ruby']).join(',')}"]
end
worker.run
