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

const (
	// DurableConfig is the Redis key where tempestd keeps [pubsub] durable: [[pattern, history], ...].
	DurableConfig = "tempest:pubsub:durable"
	// ShardedConfig is "1" when tempestd relays sharded pub/sub ([pubsub] sharded): then SPUBLISH.
	ShardedConfig = "tempest:pubsub:sharded"
	// ConfigCache is how long a publisher trusts what it read of those two keys.
	ConfigCache = 5 * time.Second
)

// XADD and PUBLISH in one step (tempest/publish.py): no subscriber sees a message the stream lacks
const publishDurableSource = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
return id
`

var (
	publishDurable = redis.NewScript(1, publishDurableSource)
	// the same with sharded pub/sub: the channel is in its stream's slot, tempest:stream:{<channel>}
	spublishDurable = redis.NewScript(1, strings.Replace(publishDurableSource, "'PUBLISH'", "'SPUBLISH'", 1))
)

type durablePattern struct {
	match   *regexp.Regexp
	history int
}

// publisher is what tempestd stored for publishers, read at most every ConfigCache.
type publisher struct {
	sync.Mutex
	read     time.Time
	patterns []durablePattern
	sharded  bool
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
	history, durable, sharded := w.publishConfig(conn, channel)
	if !durable {
		return publishPlain(conn, channel, raw, sharded)
	}
	script := publishDurable
	if sharded {
		script = spublishDurable
	}
	return redis.String(script.Do(conn, "tempest:stream:{"+channel+"}", raw, history, channel))
}

// publishPlain is PUBLISH, or SPUBLISH (routed to the channel's master on a cluster) when sharded.
func publishPlain(conn redis.Conn, channel string, raw any, sharded bool) (int64, error) {
	if sharded {
		return redis.Int64(conn.Do("SPUBLISH", channel, raw))
	}
	return redis.Int64(conn.Do("PUBLISH", channel, raw))
}

// publishConfig is the history length of channel when it is durable, and whether pub/sub is
// sharded (both read from Redis, trusted for ConfigCache).
func (w *Worker) publishConfig(conn redis.Conn, channel string) (int, bool, bool) {
	p := &w.publisher
	p.Lock()
	defer p.Unlock()
	if time.Since(p.read) > ConfigCache {
		p.patterns = nil
		flag, _ := redis.String(conn.Do("GET", ShardedConfig))
		p.sharded = flag == "1"
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
			return pattern.history, true, p.sharded
		}
	}
	return 0, false, p.sharded
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
