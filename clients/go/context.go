package tempest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Context is what a handler knows about its job, and how it answers.
type Context struct {
	Worker    *Worker
	Action    string         // the job's action ("url" for HTTP requests)
	JobID     string         // echoed by every answer, exactly as received
	RespondTo string         // "host:port" of the answer endpoint; "" when no answer is wanted
	Env       map[string]any // a url job's env (method, url, headers, body...); nil otherwise

	answered   int
	openStream *Stream
	session    *Session
}

// Answer sends data (any JSON value; for url jobs [status, headers, body]). It may be called
// several times: later answers of an HTTP job are dropped by the front, a ws job's all reach
// its socket.
func (c *Context) Answer(data any) error {
	c.answered++
	if c.session != nil && c.session.regenerated && c.Action == HTTPAction {
		data = withHeader(data, RegeneratedHeader, c.session.ID)
	}
	payload, err := encode(data)
	if err != nil {
		return err
	}
	return c.Worker.Send(c.RespondTo, c.Action, c.JobID, payload)
}

// Forward passes the job on: [action, args, respond_to, job_id] is pushed to queue, and the
// worker that takes it (in any language) answers the waiting client. The handler then sends no
// answer itself.
func (c *Context) Forward(queue, action string, args ...any) error {
	c.answered++ // someone else answers: no 500 for a handler that returns nil
	if args == nil {
		args = []any{}
	}
	job, err := encode([]any{action, args, nullable(c.RespondTo), c.JobID})
	if err != nil {
		return err
	}
	conn := c.Worker.Redis()
	defer conn.Close()
	_, err = conn.Do("RPUSH", queue, job)
	return err
}

// Part is one part of a fan-out (Context.Gather): a job of Action with Args on Queue.
type Part struct {
	Queue  string
	Action string
	Args   []any
}

// Gather fans out: each part is pushed to its queue as a job, their answers are awaited up to
// timeout and returned in the parts' order, each the decoded JSON of its answer, or nil for a
// part that did not answer in time (or answered with something that is not JSON).
func (c *Context) Gather(parts []Part, timeout time.Duration) ([]any, error) {
	if c.RespondTo == "" {
		return nil, errors.New("gather needs a job with respond_to (the answer endpoint relays the parts' answers)")
	}
	key := "tempest:gather:{" + randomToken(16) + "}"
	gid := key[len("tempest:gather:{") : len(key)-1]
	conn := c.Worker.Redis()
	defer conn.Close()
	conn.Send("XADD", key, "*", "part", "-1")
	conn.Send("EXPIRE", key, GatherTTL)
	for i, part := range parts {
		args := part.Args
		if args == nil {
			args = []any{}
		}
		job, err := encode([]any{part.Action, args, c.RespondTo, fmt.Sprintf("gather:%s:%d", gid, i)})
		if err != nil {
			return nil, err
		}
		conn.Send("RPUSH", part.Queue, job)
	}
	replies, err := redis.Values(conn.Do(""))
	defer conn.Do("DEL", key)
	if err != nil {
		return nil, err
	}
	for _, reply := range replies {
		if e, ok := reply.(redis.Error); ok {
			return nil, e
		}
	}
	results := make([]any, len(parts))
	missing := len(parts)
	seen := make([]bool, len(parts))
	deadline, last := time.Now().Add(timeout), "0-0"
	for missing > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if left > PollTimeout {
			left = PollTimeout
		}
		block := left.Milliseconds()
		if block < 1 {
			block = 1
		}
		reply, err := redis.Values(redis.DoWithTimeout(conn, left+5*time.Second, "XREAD", "BLOCK", block, "STREAMS", key, last))
		if err == redis.ErrNil {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, stream := range reply { // [key, [[id, [field, value, ...]], ...]]
			pair, _ := redis.Values(stream, nil)
			if len(pair) != 2 {
				continue
			}
			entries, _ := redis.Values(pair[1], nil)
			for _, entry := range entries {
				item, _ := redis.Values(entry, nil)
				if len(item) != 2 {
					continue
				}
				last, _ = redis.String(item[0], nil)
				fields, _ := redis.StringMap(item[1], nil)
				index, err := strconv.Atoi(fields["part"])
				if err != nil || index < 0 || index >= len(parts) || seen[index] {
					continue // part -1 made the stream
				}
				seen[index] = true
				missing--
				if json.Unmarshal([]byte(fields["answer"]), &results[index]) != nil {
					c.Worker.Log.Printf("gather: part %d answered with something that is not JSON", index)
				}
			}
		}
	}
	if missing > 0 {
		c.Worker.Log.Printf("gather %s: %d of %d parts missing after %v", gid, missing, len(parts), timeout)
	}
	return results, nil
}

// Stream begins a streamed answer to an HTTP request: its status and headers now (an object
// or a list of [name, value] pairs, or nil), the body with Write as it is ready, then Close.
func (c *Context) Stream(status int, headers any) (*Stream, error) {
	if headers == nil {
		headers = map[string]string{}
	}
	var head any = []any{status, headers}
	if c.session != nil && c.session.regenerated {
		head = withHeader(head, RegeneratedHeader, c.session.ID)
	}
	payload, err := encode(head)
	if err != nil {
		return nil, err
	}
	c.answered++
	c.openStream = &Stream{c: c}
	return c.openStream, c.Worker.Send(c.RespondTo, "stream", c.JobID, payload)
}

// Stream is the body of a streamed answer (Context.Stream); it is an io.Writer.
type Stream struct {
	c      *Context
	closed bool
}

// Write sends a piece of the body at once (raw bytes).
func (s *Stream) Write(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("write to a closed stream")
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.c.Worker.Send(s.c.RespondTo, "chunk", s.c.JobID, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteString sends a piece of the body as UTF-8.
func (s *Stream) WriteString(text string) (int, error) { return s.Write([]byte(text)) }

// Close ends the body.
func (s *Stream) Close() error { return s.end() }

// Abort gives up: tempestd closes the client's connection without ending the body, so the
// client can tell it is incomplete.
func (s *Stream) Abort() error { return s.end("abort") }

func (s *Stream) end(how ...any) error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.c.Worker.Send(s.c.RespondTo, "end", append([]any{s.c.JobID}, how...)...)
}

// withHeader adds a header to a url answer [status, headers, body] (headers an object, a list
// of pairs, or missing), whatever Go types it is made of.
func withHeader(answer any, name, value string) any {
	raw, err := encode(answer)
	if err != nil {
		return answer
	}
	var list []any
	if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
		return answer // not an answer the front accepts anyway: its 502 says why
	}
	if len(list) == 1 {
		list = append(list, nil)
	}
	switch headers := list[1].(type) {
	case map[string]any:
		headers[name] = value
	case []any:
		list[1] = append(headers, []any{name, value})
	case nil:
		list[1] = map[string]any{name: value}
	}
	return list
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// randomToken is n random bytes in URL-safe base64 without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
