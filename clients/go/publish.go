package tempest

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// DurableConfig is the Redis key where tempestd keeps [pubsub] durable: [[pattern, history], ...].
const DurableConfig = "tempest:pubsub:durable"

// XADD and PUBLISH in one step (tempest/publish.py): no subscriber sees a message the stream lacks
var publishDurable = redis.NewScript(1, `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
return id
`)

type durablePattern struct {
	match   *regexp.Regexp
	history int
}

type publisher struct {
	sync.Mutex
	read     time.Time
	patterns []durablePattern
}

// Publish sends data (any JSON value; a string as is) to the subscribers of channel (SSE and
// WebSocket clients). It returns the stream id (a string) on a durable channel, else the number
// of Redis subscribers (an int64).
func (w *Worker) Publish(channel string, data any) (any, error) {
	return w.publish(channel, []any{data})
}

// PublishEvent is Publish with an SSE event name (no CR, LF or NUL).
func (w *Worker) PublishEvent(channel, event string, data any) (any, error) {
	if strings.ContainsAny(event, "\r\n\x00") {
		return nil, errors.New("bad event name " + event)
	}
	return w.publish(channel, []any{event, data})
}

func (w *Worker) publish(channel string, message []any) (any, error) {
	raw, err := encode(message)
	if err != nil {
		return nil, err
	}
	conn := w.Redis()
	defer conn.Close()
	history, durable := w.durableHistory(conn, channel)
	if !durable {
		return redis.Int64(conn.Do("PUBLISH", channel, raw))
	}
	return redis.String(publishDurable.Do(conn, "tempest:stream:{"+channel+"}", raw, history, channel))
}

// durableHistory is the history length of channel when it is durable (the patterns read from
// Redis, trusted for 5 s).
func (w *Worker) durableHistory(conn redis.Conn, channel string) (int, bool) {
	p := &w.publisher
	p.Lock()
	defer p.Unlock()
	if time.Since(p.read) > 5*time.Second {
		p.patterns = nil
		if raw, err := redis.Bytes(conn.Do("GET", DurableConfig)); err == nil {
			var config [][2]any
			if json.Unmarshal(raw, &config) == nil {
				for _, entry := range config {
					pattern, _ := entry[0].(string)
					history, _ := entry[1].(float64)
					p.patterns = append(p.patterns, durablePattern{fnmatch(pattern), int(history)})
				}
			}
		}
		p.read = time.Now()
	}
	for _, pattern := range p.patterns {
		if pattern.match.MatchString(channel) {
			return pattern.history, true
		}
	}
	return 0, false
}

// fnmatch compiles a shell pattern as Python's fnmatch.fnmatchcase reads it (* and ? match
// any character, / included; [seq] and [!seq]).
func fnmatch(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)\A`)
	for i := 0; i < len(pattern); i++ {
		switch ch := pattern[i]; ch {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := i + 1
			if j < len(pattern) && pattern[j] == '!' {
				j++
			}
			if j < len(pattern) && pattern[j] == ']' {
				j++
			}
			for j < len(pattern) && pattern[j] != ']' {
				j++
			}
			if j >= len(pattern) {
				b.WriteString(`\[`)
				continue
			}
			set := strings.ReplaceAll(pattern[i+1:j], `\`, `\\`)
			if strings.HasPrefix(set, "!") {
				set = "^" + set[1:]
			} else if strings.HasPrefix(set, "^") {
				set = `\` + set
			}
			b.WriteString("[" + set + "]")
			i = j
		default:
			b.WriteString(regexp.QuoteMeta(string(ch)))
		}
	}
	b.WriteString(`\z`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return regexp.MustCompile(`\A` + regexp.QuoteMeta(pattern) + `\z`)
	}
	return re
}
