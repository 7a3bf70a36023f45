// The Go test worker of tests/e2e/test_client_go.py (built by make -C clients/go into
// clients/go/bin/testworker): testworker [-reliable|-plain] [-heartbeat 1s] QUEUE[,QUEUE...];
// without -reliable or -plain, the client's default (reliable, unless TEMPEST_RELIABLE says no).
//
// url jobs, by path:
//
//	/stream            a streamed answer: "one\n", "two\n", "three\n"
//	/abort             a stream that panics after its first chunk (the body is cut)
//	/fail, /error      a panic, an error: 500
//	/hold              waits up to 8 s for an item on gate:QUEUE (after pushing the pid to
//	                   holding:QUEUE), then answers "done by <pid>"
//	/session/set?k=v   session[k] = v; /session/get?k= reads it; /session/login regenerates
//	/publish?c=CHANNEL publishes "hello from go" (event "greeting" with &event=greeting)
//	/forward?to=QUEUE  forwards a greet job {"path", "via"} to QUEUE
//	/gather?q=A,B      square jobs 1, 2... to queues A, B...; answers the sum, X-Missing
//	/record?list=L&tag=T  RPUSH L "T <length of this worker's processing list of each queue, /-separated>"
//	.../digest?reader=copy|readall  the body read with c.Body() (io.Copy into a SHA-256, or
//	                   io.ReadAll): JSON {form, size, sha256}; an error wrapping ErrBodyGone: 410
//	anything else      "go worker <pid>: <path>"
//
// greet jobs are answered "go greeted <path> from <pid>" (a path ending in /fail panics), square jobs with the number squared.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"tempest"
)

func main() {
	reliable := flag.Bool("reliable", false, "reliable delivery, whatever TEMPEST_RELIABLE says")
	plain := flag.Bool("plain", false, "plain BLPOP, whatever TEMPEST_RELIABLE says")
	heartbeat := flag.Duration("heartbeat", 15*time.Second, "reliable: the heartbeat period")
	flag.Parse()
	queue := "tempest"
	if flag.NArg() > 0 {
		queue = flag.Arg(0)
	}
	queues := strings.Split(queue, ",")
	w := tempest.NewWorker(tempest.Options{Queues: queues, Reliable: *reliable, NoReliable: *plain, Heartbeat: *heartbeat})
	pid := os.Getpid()
	text := map[string]string{"Content-Type": "text/plain"}

	w.On("greet", func(c *tempest.Context, args []any) (any, error) {
		info, _ := args[0].(map[string]any)
		if path, _ := info["path"].(string); strings.HasSuffix(path, "/fail") {
			panic("asked to fail")
		}
		return []any{200, text, fmt.Sprintf("go greeted %v from %d", info["path"], pid)}, nil
	})
	w.On("square", func(c *tempest.Context, args []any) (any, error) {
		n, _ := args[0].(float64)
		return n * n, nil
	})
	w.On("url", func(c *tempest.Context, args []any) (any, error) {
		target, _ := url.Parse(c.Env["url"].(string))
		query := target.Query()
		if strings.HasSuffix(target.Path, "/digest") {
			return digest(c, query.Get("reader"))
		}
		switch target.Path {
		case "/stream":
			out, err := c.Stream(200, text)
			if err != nil {
				return nil, err
			}
			for _, piece := range []string{"one\n", "two\n", "three\n"} {
				out.WriteString(piece)
				time.Sleep(50 * time.Millisecond)
			}
			return nil, out.Close()
		case "/abort":
			out, err := c.Stream(200, text)
			if err != nil {
				return nil, err
			}
			out.WriteString("partial\n")
			panic("failed in the middle of a stream")
		case "/fail":
			panic("asked to fail")
		case "/error":
			return nil, fmt.Errorf("asked for an error")
		case "/hold":
			conn := w.Redis()
			defer conn.Close()
			conn.Do("RPUSH", "holding:"+queue, pid)
			redis.DoWithTimeout(conn, 10*time.Second, "BLPOP", "gate:"+queue, 8)
			return []any{200, text, fmt.Sprintf("done by %d", pid)}, nil
		case "/record":
			conn := w.Redis()
			defer conn.Close()
			held := []string{}
			for _, q := range queues {
				n, err := redis.Int(conn.Do("LLEN", "tempest:processing:{"+q+"}:"+w.WorkerID))
				if err != nil {
					return nil, err
				}
				held = append(held, strconv.Itoa(n))
			}
			if _, err := conn.Do("RPUSH", query.Get("list"), query.Get("tag")+" "+strings.Join(held, "/")); err != nil {
				return nil, err
			}
			return []any{200, text, "recorded"}, nil
		case "/session/set":
			s := c.Session()
			for k := range query {
				if err := s.Set(k, query.Get(k)); err != nil {
					return nil, err
				}
			}
			return []any{200, text, "set " + s.ID}, nil
		case "/session/get":
			v, ok, err := c.Session().Get(query.Get("k"))
			if err != nil {
				return nil, err
			}
			return []any{200, text, fmt.Sprintf("%v %v", v, ok)}, nil
		case "/session/login":
			s := c.Session()
			old := s.ID
			if err := s.Set("user", query.Get("user")); err != nil {
				return nil, err
			}
			id, err := s.Regenerate()
			if err != nil {
				return nil, err
			}
			return []any{200, text, old + " " + id}, nil
		case "/publish":
			var reply any
			var err error
			if event := query.Get("event"); event != "" {
				reply, err = w.PublishEvent(query.Get("c"), event, "hello from go")
			} else {
				reply, err = w.Publish(query.Get("c"), "hello from go")
			}
			if err != nil {
				return nil, err
			}
			return []any{200, text, fmt.Sprint(reply)}, nil
		case "/forward":
			return nil, c.Forward(query.Get("to"), "greet", map[string]any{"path": target.Path, "via": pid})
		case "/gather":
			var parts []tempest.Part
			for i, q := range strings.Split(query.Get("q"), ",") {
				parts = append(parts, tempest.Part{Queue: q, Action: "square", Args: []any{i + 1}})
			}
			timeout, _ := strconv.ParseFloat(query.Get("timeout"), 64)
			if timeout <= 0 {
				timeout = 3
			}
			results, err := c.Gather(parts, time.Duration(timeout*float64(time.Second)))
			if err != nil {
				return nil, err
			}
			total, missing := 0.0, []string{}
			for i, r := range results {
				if n, ok := r.(float64); ok {
					total += n
				} else {
					missing = append(missing, strconv.Itoa(i))
				}
			}
			return []any{200, map[string]string{"Content-Type": "text/plain", "X-Missing": strings.Join(missing, ",")}, fmt.Sprint(total)}, nil
		}
		return []any{200, text, fmt.Sprintf("go worker %d: %s", pid, target.Path)}, nil
	})
	w.Run()
}

// digest reads the body as a handler does: the form it came in (the env's key), its size and SHA-256.
func digest(c *tempest.Context, reader string) (any, error) {
	form := "none"
	for _, key := range []string{"body_file", "body_key", "body_base64", "body"} {
		if _, ok := c.Env[key]; ok {
			form = key
			break
		}
	}
	hash := sha256.New()
	var size int64
	body, err := c.Body()
	if err == nil {
		if reader == "readall" {
			var data []byte
			data, err = io.ReadAll(body)
			hash.Write(data)
			size = int64(len(data))
		} else {
			size, err = io.Copy(hash, body)
		}
		body.Close()
	}
	if errors.Is(err, tempest.ErrBodyGone) {
		return []any{410, map[string]string{"Content-Type": "text/plain"}, "BodyGone: " + err.Error()}, nil
	}
	if err != nil {
		return nil, err
	}
	answer, _ := json.Marshal(map[string]any{"form": form, "size": size, "sha256": hex.EncodeToString(hash.Sum(nil))})
	return []any{200, map[string]string{"Content-Type": "application/json"}, string(answer)}, nil
}
