# frozen_string_literal: true

module Tempest
  class Worker
    VERSION = "0.1.0"
  end
end
