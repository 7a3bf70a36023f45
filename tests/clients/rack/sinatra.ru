# frozen_string_literal: true

# The Sinatra application of tests/e2e/test_rack.py, served both by tempest-rack and by rackup
# (WEBrick), whose answers the test compares.
require_relative "sinatra_app"

run SinatraApp
