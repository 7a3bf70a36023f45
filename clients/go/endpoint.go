package tempest

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// endpoint is the kept connection to one answer endpoint ("host:port" of respond_to).
type endpoint struct {
	sync.Mutex
	address string
	conn    redis.Conn
}

// Send sends one command (action, job id, payload...) to the answer endpoint respondTo: over
// the connection kept for it, dialed (AUTH, then ACTIONS for the handlers' actions) when needed.
// A kept connection that turns out broken is dialed again once.
func (w *Worker) Send(respondTo string, command string, args ...any) error {
	if respondTo == "" {
		return nil
	}
	w.mu.Lock()
	e := w.endpoints[respondTo]
	if e == nil {
		e = &endpoint{address: respondTo}
		w.endpoints[respondTo] = e
	}
	w.mu.Unlock()
	e.Lock()
	defer e.Unlock()
	for attempt := 0; ; attempt++ {
		fresh := e.conn == nil
		if fresh {
			conn, err := w.dialEndpoint(respondTo)
			if err != nil {
				return fmt.Errorf("answer endpoint %s: %w", respondTo, err)
			}
			e.conn = conn
		}
		_, err := e.conn.Do(command, args...)
		if err == nil {
			return nil
		}
		if _, refused := err.(redis.Error); refused { // never for an answer: a password problem, say
			return fmt.Errorf("answer endpoint %s refused %s: %w", respondTo, command, err)
		}
		e.conn.Close()
		e.conn = nil
		if fresh || attempt > 0 {
			return fmt.Errorf("answer endpoint %s: %w", respondTo, err)
		}
	}
}

func (w *Worker) dialEndpoint(respondTo string) (redis.Conn, error) {
	address := respondTo
	if i := strings.LastIndex(respondTo, ":"); i >= 0 {
		address = net.JoinHostPort(strings.Trim(respondTo[:i], "[]"), respondTo[i+1:])
	}
	options := []redis.DialOption{redis.DialConnectTimeout(5 * time.Second),
		redis.DialReadTimeout(10 * time.Second), redis.DialWriteTimeout(10 * time.Second)}
	if w.opts.AnswerPassword != "" {
		options = append(options, redis.DialPassword(w.opts.AnswerPassword))
	}
	conn, err := redis.Dial("tcp", address, options...)
	if err != nil {
		return nil, err
	}
	var declared []any
	var names []string
	for action := range w.handlers {
		if action != HTTPAction && action != "ws" {
			names = append(names, action)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		declared = append(declared, name)
	}
	if len(declared) > 0 {
		if _, err := conn.Do("ACTIONS", declared...); err != nil {
			if _, refused := err.(redis.Error); !refused { // a refusal is ignored, as documented
				conn.Close()
				return nil, err
			}
		}
	}
	return conn, nil
}
