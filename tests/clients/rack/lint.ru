# frozen_string_literal: true

# The Rack gateway's test application (tests/e2e/test_rack.py), behind Rack::Lint, which fails
# any request whose env, input, headers or body break Rack's SPEC (a 500 and a
# Rack::Lint::LintError in the log). /bare/ reaches the same app without Lint, so that the
# gateway sees the app's own body objects (Lint wraps every body in itself).
require_relative "lint_app"

map("/bare") { run LintApp.new }
map("/") do
  use Rack::Lint
  run LintApp.new
end
