# frozen_string_literal: true

require_relative "lib/tempest/worker/version"

Gem::Specification.new do |spec|
  spec.name = "tempest-worker"
  spec.version = Tempest::Worker::VERSION
  spec.summary = "Workers for the Tempest application server, over Redis"
  spec.description = "Take Tempest jobs from Redis queues and answer them on tempestd's answer " \
                     "endpoint: plain and streamed HTTP answers, routing between workers, " \
                     "sessions, publishing, reliable delivery, spooled request bodies; tempest-rack " \
                     "runs a Rack application (config.ru) as a worker."
  spec.authors = ["Tempest"]
  spec.license = "MIT"
  spec.files = Dir["lib/**/*.rb", "bin/*", "examples/*.rb", "README.md"]
  spec.bindir = "bin"
  spec.executables = ["tempest-rack"] # needs rack (Debian: ruby-rack), not a dependency of the worker library
  spec.require_paths = ["lib"]
  spec.required_ruby_version = ">= 3.0"
  spec.add_dependency "redis", ">= 4.6", "< 5"
end
