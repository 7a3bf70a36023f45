package tempest

import (
	"encoding/json"
	"regexp"
	"strings"

	"github.com/gomodule/redigo/redis"
)

const (
	DefaultSessionTTL = 14 * 24 * 3600      // seconds: [front] session_ttl's default
	RegeneratedHeader = "X-Tempest-Session" // answer header: the session's new id (the front sets the cookie)
)

var sessionID = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// Session is the request's session, a view of the Redis hash session:<id> (each field's value
// the JSON list [value]); reads go to Redis each time, each write refreshes the hash's TTL.
type Session struct {
	ID  string
	TTL int

	w           *Worker
	regenerated bool
}

// Session is the request's session, or nil when tempestd has no session_cookie (or the job is
// not an HTTP request).
func (c *Context) Session() *Session {
	if c.session == nil {
		info, _ := c.Env["session"].(map[string]any)
		id, _ := info["id"].(string)
		if !sessionID.MatchString(id) {
			return nil
		}
		ttl, _ := info["ttl"].(float64)
		if ttl <= 0 {
			ttl = DefaultSessionTTL
		}
		c.session = &Session{ID: id, TTL: int(ttl), w: c.Worker}
	}
	return c.session
}

// Key is the session's Redis hash.
func (s *Session) Key() string { return "session:" + s.ID }

// Get reads one field: its value, and whether it is there.
func (s *Session) Get(field string) (any, bool, error) {
	conn := s.w.Redis()
	defer conn.Close()
	raw, err := redis.Bytes(conn.Do("HGET", s.Key(), field))
	if err == redis.ErrNil {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return value(raw), true, nil
}

// Set writes one field (HSET and EXPIRE in one transaction).
func (s *Session) Set(field string, v any) error { return s.Update(map[string]any{field: v}) }

// Update writes several fields in one transaction, refreshing the TTL.
func (s *Session) Update(values map[string]any) error {
	if len(values) == 0 {
		return nil
	}
	args := []any{s.Key()}
	for field, v := range values {
		raw, err := encode([]any{v})
		if err != nil {
			return err
		}
		args = append(args, field, raw)
	}
	conn := s.w.Redis()
	defer conn.Close()
	conn.Send("MULTI")
	conn.Send("HSET", args...)
	conn.Send("EXPIRE", s.Key(), s.TTL)
	_, err := conn.Do("EXEC")
	return err
}

// Delete forgets one field.
func (s *Session) Delete(field string) error {
	conn := s.w.Redis()
	defer conn.Close()
	_, err := conn.Do("HDEL", s.Key(), field)
	return err
}

// Has tells whether the field is set.
func (s *Session) Has(field string) (bool, error) {
	conn := s.w.Redis()
	defer conn.Close()
	return redis.Bool(conn.Do("HEXISTS", s.Key(), field))
}

// All reads every field.
func (s *Session) All() (map[string]any, error) {
	conn := s.w.Redis()
	defer conn.Close()
	raw, err := redis.StringMap(conn.Do("HGETALL", s.Key()))
	if err != nil {
		return nil, err
	}
	all := make(map[string]any, len(raw))
	for field, v := range raw {
		all[field] = value([]byte(v))
	}
	return all, nil
}

// Clear forgets every field (logout); the id stays: Regenerate it too.
func (s *Session) Clear() error {
	conn := s.w.Redis()
	defer conn.Close()
	_, err := conn.Do("DEL", s.Key())
	return err
}

// Regenerate gives the session a new id, keeping its fields (call it at login): the old id
// stops working, and the answer carries X-Tempest-Session so that the front sets the cookie.
func (s *Session) Regenerate() (string, error) {
	old := s.Key()
	s.ID = randomToken(16)
	s.regenerated = true
	conn := s.w.Redis()
	defer conn.Close()
	_, err := conn.Do("RENAME", old, s.Key())
	if e, ok := err.(redis.Error); ok && strings.Contains(strings.ToLower(e.Error()), "no such key") {
		err = nil // nothing written yet, nothing to move
	}
	return s.ID, err
}

func value(raw []byte) any {
	var list []any
	if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
		return nil
	}
	return list[0]
}
