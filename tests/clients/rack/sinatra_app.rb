# frozen_string_literal: true

require "json"
require "sinatra/base"

# A small Sinatra application with what web applications do: query strings, non-ASCII paths
# and bodies, forms, JSON, cookies, redirects, 404, an exception, a streamed body, binary data.
# Served with RACK_ENV=production (rackup -E production, tempest-rack -E production): no
# development pages.
class SinatraApp < Sinatra::Base
  get "/hello" do
    "Hello #{params['name']} (#{params.keys.sort.join(',')})"
  end

  get "/héllo/:name" do
    content_type "text/plain", charset: "utf-8"
    "héllo #{params['name']}, #{request.path_info.bytesize} bytes of path"
  end

  post "/form" do
    "#{params['name']} likes #{params['fruit'].join(' and ')}"
  end

  post "/json" do
    data = JSON.parse(request.body.read)
    content_type :json
    JSON.generate("received" => data, "keys" => data.keys.sort)
  end

  get "/cookies/set" do
    response.set_cookie("flavor", value: "chocolate chip", path: "/", httponly: true)
    response.set_cookie("count", "1")
    "cookies set"
  end

  get "/cookies/read" do
    JSON.generate(request.cookies)
  end

  get "/redirect" do
    redirect to("/hello?name=back")
  end

  post "/login" do
    redirect to("/welcome?user=#{params['user']}") # after a POST: 303 See Other
  end

  get "/boom" do
    raise "an exception in a Sinatra route"
  end

  get "/stream" do
    stream do |out|
      out << "one\n"
      sleep 0.1
      out << "two\n"
      out << "three\n"
    end
  end

  get "/binary" do
    content_type "application/octet-stream"
    (0..255).to_a.reverse.pack("C*")
  end

  post "/upload" do
    data = request.body.read
    content_type "application/octet-stream"
    data.reverse
  end

  get "/halt" do
    halt 418, { "X-Reason" => "short and stout" }, "I'm a teapot"
  end
end
