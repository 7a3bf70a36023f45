package tempest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// BodyBlock is the number of bytes read from a spooled file at a time (a Redis chunk's size).
const BodyBlock = 256 * 1024

// ErrBodyGone is wrapped by the errors of Context.Body and of its reader's Read when a spooled
// request body is no longer there (its request was answered, timed out or its client left; a
// Redis body expired), or not the bytes its token describes (shorter than its size, another
// sha256): errors.Is(err, tempest.ErrBodyGone). The Python library's tempest.spool.BodyGone.
var ErrBodyGone = errors.New("spooled body gone")

// Body returns the request body of a url job as an io.ReadCloser, wherever it is
// (docs/protocol.md, "Spooled bodies"): spooled by tempestd to a file on this host
// (env body_file, opened read-only and read in blocks of BodyBlock bytes), to Redis
// (body_key, its chunks fetched one LINDEX at a time as they are read), or inline in the job
// (body, body_base64). A spooled body is read up to its token's size and hashed on the way:
// a body shorter than its size, a missing chunk or another SHA-256 makes Read return an error
// wrapping ErrBodyGone (instead of its last block and io.EOF). Close it when done.
//
// The error wraps ErrBodyGone when the spooled file does not exist.
func (c *Context) Body() (io.ReadCloser, error) {
	return OpenBody(c.Env, c.Worker.Redis)
}

// OpenBody is Context.Body for any url job's env; conn gives a connection to the queues' Redis
// (closed after each chunk), needed for a body_key only.
func OpenBody(env map[string]any, conn func() redis.Conn) (io.ReadCloser, error) {
	if token, ok := env["body_file"].(map[string]any); ok {
		path, _ := token["path"].(string)
		size, err := tokenSize(token)
		if err != nil {
			return nil, err
		}
		file, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrBodyGone, path)
		}
		if err != nil {
			return nil, err
		}
		return newChecked(&fileBlocks{file: file, buffer: make([]byte, BodyBlock)}, token, path, size), nil
	}
	if token, ok := env["body_key"].(map[string]any); ok {
		key, _ := token["key"].(string)
		size, err := tokenSize(token)
		if err != nil {
			return nil, err
		}
		if conn == nil {
			return nil, errors.New("a body in Redis (body_key) needs a Redis connection")
		}
		chunks, _ := number(token["chunks"])
		return newChecked(&redisChunks{conn: conn, key: key, chunks: chunks}, token, key, size), nil
	}
	if encoded, ok := env["body_base64"].(string); ok {
		data, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			return nil, fmt.Errorf("body_base64: %w", err)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	text, _ := env["body"].(string)
	return io.NopCloser(strings.NewReader(text)), nil
}

func tokenSize(token map[string]any) (int64, error) {
	size, ok := number(token["size"])
	if !ok || size < 0 {
		return 0, fmt.Errorf("a spooled body's token without a size: %v", token)
	}
	return size, nil
}

// number is a JSON number of the env (float64 from encoding/json, or json.Number) as an int64.
func number(value any) (int64, bool) {
	switch v := value.(type) {
	case float64:
		return int64(v), v == float64(int64(v))
	case json.Number:
		n, err := v.Int64()
		return n, err == nil
	case int:
		return int64(v), true
	case int64:
		return v, true
	}
	return 0, false
}

// blocks gives a spooled body's bytes in order: io.EOF at its end.
type blocks interface {
	next() ([]byte, error)
	close() error
}

// checked reads a spooled body from its blocks, up to its token's size, hashing it.
type checked struct {
	source  blocks
	where   string
	size    int64
	read    int64
	sha256  string // the token's, "" when it has none
	hash    hash.Hash
	pending []byte
	err     error // sticky: io.EOF once the last block is given out
}

func newChecked(source blocks, token map[string]any, where string, size int64) *checked {
	digest, _ := token["sha256"].(string)
	return &checked{source: source, where: where, size: size, sha256: strings.ToLower(digest), hash: sha256.New()}
}

func (b *checked) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		b.pending, b.err = b.nextBlock()
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

// nextBlock is the next block of the body; the last one comes with io.EOF, once the whole
// body is checked.
func (b *checked) nextBlock() ([]byte, error) {
	if b.read == b.size { // an empty body
		return nil, b.verify()
	}
	block, err := b.source.next()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: %s (%d of %d bytes read)", ErrBodyGone, b.where, b.read, b.size)
	}
	if err != nil {
		return nil, err
	}
	if left := b.size - b.read; int64(len(block)) > left {
		block = block[:left] // size bytes, no more
	}
	b.hash.Write(block)
	b.read += int64(len(block))
	if b.read < b.size {
		return block, nil
	}
	if err := b.verify(); err != io.EOF {
		return nil, err
	}
	return block, io.EOF
}

func (b *checked) verify() error {
	digest := hex.EncodeToString(b.hash.Sum(nil))
	if b.sha256 != "" && digest != b.sha256 {
		return fmt.Errorf("%w: %s: its sha256 is %s, not %s as its token says", ErrBodyGone, b.where, digest, b.sha256)
	}
	return io.EOF
}

func (b *checked) Close() error { return b.source.close() }

// fileBlocks reads a spooled file into one buffer, reused: a block is given out whole before
// the next is read.
type fileBlocks struct {
	file   *os.File
	buffer []byte
}

func (f *fileBlocks) next() ([]byte, error) {
	n, err := f.file.Read(f.buffer)
	if n > 0 {
		return f.buffer[:n], nil
	}
	if err == nil {
		err = io.EOF
	}
	return nil, err
}

func (f *fileBlocks) close() error { return f.file.Close() }

// redisChunks fetches a Redis body's chunks in order, one LINDEX each.
type redisChunks struct {
	conn   func() redis.Conn
	key    string
	chunks int64
	index  int64
}

func (r *redisChunks) next() ([]byte, error) {
	if r.index >= r.chunks {
		return nil, io.EOF
	}
	conn := r.conn()
	defer conn.Close()
	chunk, err := redis.Bytes(conn.Do("LINDEX", r.key, r.index))
	if err == redis.ErrNil || (err == nil && len(chunk) == 0) {
		return nil, fmt.Errorf("%w: %s: chunk %d of %d is gone", ErrBodyGone, r.key, r.index, r.chunks)
	}
	if err != nil {
		return nil, err
	}
	r.index++
	return chunk, nil
}

func (r *redisChunks) close() error { return nil }
