# frozen_string_literal: true

require "base64"
require "digest"

module Tempest
  # A spooled request body that is no longer there (its request was answered, timed out or its
  # client left; a Redis body expired), or not the bytes its token describes (shorter than its
  # size, another sha256): the Python library's tempest.spool.BodyGone. An IOError, as IO
  # raises for a stream it cannot read.
  class BodyGone < IOError; end

  # A url job's request body as an IO-like object (a Rack input's read, gets, each, rewind,
  # close), wherever it is (docs/protocol.md, "Spooled bodies"): the spooled file (env "body_file",
  # opened read-only and read in blocks), its chunks in Redis (env "body_key", one LINDEX each
  # as the reader gets to it), or the inline "body" / "body_base64". A spooled body is read
  # up to its token's size and hashed on the way: a missing file or chunk, a body shorter than
  # its size, or another SHA-256 raises BodyGone before its last block is given out. Strings
  # read are binary (ASCII-8BIT).
  class Body
    BLOCK = 256 * 1024 # bytes read from a spooled file at a time (a Redis chunk's size)

    # the body's length in bytes (a spooled body's token says it; an inline one is in memory)
    attr_reader :size

    # env: a url job's env; redis: a redis-rb client of the queues' Redis (for body_key).
    # Raises BodyGone when a spooled file does not exist.
    def self.open(env, redis)
      env ||= {}
      if env["body_file"].is_a?(Hash)
        new(FileSource.new(env["body_file"]["path"]), env["body_file"])
      elsif env["body_key"].is_a?(Hash)
        raise ArgumentError, "a body in Redis (body_key) needs a Redis client" if redis.nil?

        token = env["body_key"]
        new(RedisSource.new(redis, token["key"], Integer(token["chunks"])), token)
      elsif env.key?("body_base64")
        new(InlineSource.new(Base64.decode64(env["body_base64"].to_s)))
      else
        new(InlineSource.new(env["body"].to_s.b))
      end
    end

    # source: #next_block (a String, nil at its end) and #close; token: a spooled body's
    # {"size", "sha256"}, nil for an inline body (nothing to check against).
    def initialize(source, token = nil)
      @source = source
      @token = token
      @size = token ? Integer(token["size"]) : source.size
      @digest = Digest::SHA256.new
      @read = 0 # bytes taken from the source
      @done = false
      @buffer = String.new(encoding: Encoding::BINARY)
      @pos = 0 # where the unread part of @buffer begins
      @closed = false
    end

    # IO#read: read(nil) the rest ("" at the end), read(n) up to n bytes (nil at the end);
    # into outbuf when given.
    def read(length = nil, outbuf = nil)
      raise IOError, "closed body" if @closed

      if length.nil?
        data = take(buffered)
        while (block = next_block)
          data << block
        end
      else
        raise ArgumentError, "negative length #{length}" if length.negative?

        fill { buffered >= length }
        if buffered.zero? && length.positive?
          outbuf&.clear
          return nil
        end
        data = take(length)
      end
      outbuf ? outbuf.replace(data) : data
    end

    # the next line, "\n" included (nil at the end)
    def gets
      raise IOError, "closed body" if @closed

      fill { @buffer.index("\n", @pos) }
      return nil if buffered.zero?

      stop = @buffer.index("\n", @pos)
      take(stop ? stop + 1 - @pos : buffered)
    end

    # yields the body in blocks (Strings) as they are read; an Enumerator without a block
    def each
      return enum_for(:each) unless block_given?

      yield take(buffered) unless buffered.zero?
      while (block = next_block)
        yield block
      end
      self
    end

    def eof?
      fill { buffered.positive? }
      buffered.zero?
    end

    # back to the first byte (IO#rewind; a Rack 2 input must rewind): a spooled body is read
    # again from its file or its chunks, and checked again
    def rewind
      raise IOError, "closed body" if @closed

      @source.rewind
      @digest.reset
      @read = 0
      @done = false
      @buffer = String.new(encoding: Encoding::BINARY)
      @pos = 0
      0
    end

    def close
      return if @closed

      @closed = true
      @source.close
      nil
    end

    def closed? = @closed

    private

    def buffered = @buffer.bytesize - @pos

    # up to n bytes from the buffer (the part read is kept until the next fill: no copy per read)
    def take(count)
      data = @buffer.byteslice(@pos, count) || String.new(encoding: Encoding::BINARY)
      @pos += data.bytesize
      data
    end

    def fill
      until yield
        block = next_block
        break if block.nil?

        @buffer = @buffer.byteslice(@pos..) if @pos.positive?
        @pos = 0
        @buffer << block
      end
    end

    # The next block from the source, checked against the token: nil at the end.
    def next_block
      return nil if @done

      block = @source.next_block
      return finish(block) if @token.nil?
      raise BodyGone, "spooled body #{@source} is gone (#{@read} of #{@size} bytes read)" if block.nil? && @read < @size

      block = block.to_s.byteslice(0, @size - @read) # `size` bytes, no more
      @read += block.bytesize
      @digest.update(block)
      return block if @read < @size

      check
      finish(block.empty? ? nil : block)
    end

    def finish(block)
      @done = true if block.nil? || @token
      block
    end

    def check
      expected = @token["sha256"]
      digest = @digest.hexdigest
      return if !expected.is_a?(String) || digest == expected.downcase

      raise BodyGone, "spooled body #{@source}: its sha256 is #{digest}, not #{expected} as its token says"
    end

    # the spooled file, read in blocks
    class FileSource
      def initialize(path)
        @path = path
        @file = File.open(path, "rb")
      rescue Errno::ENOENT
        raise BodyGone, "spooled body #{path} is gone"
      end

      def next_block = @file.read(BLOCK)
      def rewind = @file.rewind
      def close = @file.close
      def to_s = @path
    end

    # the chunks of a Redis body, one LINDEX each, in order
    class RedisSource
      def initialize(redis, key, chunks)
        @redis = redis
        @key = key
        @chunks = chunks
        @index = 0
      end

      def next_block
        return nil if @index >= @chunks

        chunk = @redis.call("LINDEX", @key, @index)
        raise BodyGone, "spooled body #{@key}: chunk #{@index} of #{@chunks} is gone" if chunk.nil? || chunk.empty?

        @index += 1
        chunk.b
      end

      def rewind
        @index = 0
      end

      def close = nil
      def to_s = @key
    end

    # an inline body, all in memory
    class InlineSource
      attr_reader :size

      def initialize(data)
        @whole = data.b
        @data = @whole
        @size = @whole.bytesize
      end

      def next_block
        data = @data
        @data = nil
        data.nil? || data.empty? ? nil : data
      end

      def rewind
        @data = @whole
      end

      def close = nil
    end
  end
end
