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

// GrantsKey is the set of the private channels' patterns granted to the session.
func (s *Session) GrantsKey() string { return "tempest:grants:" + s.ID }

// Clear forgets every field and the grants (logout); the id stays: Regenerate it too. One DEL
// per key on a cluster (they are in two slots).
func (s *Session) Clear() error {
	conn := s.w.Redis()
	defer conn.Close()
	if s.w.Clustered() {
		if _, err := conn.Do("DEL", s.Key()); err != nil {
			return err
		}
		_, err := conn.Do("DEL", s.GrantsKey())
		return err
	}
	_, err := conn.Do("DEL", s.Key(), s.GrantsKey())
	return err
}

// Regenerate gives the session a new id, keeping its fields and grants (call it at login): the
// old id stops working, and the answer carries X-Tempest-Session so that the front sets the
// cookie. Both keys are RENAMEd in one transaction, or, on a cluster (where the new id's keys
// are in other slots), copied to the new id and deleted.
func (s *Session) Regenerate() (string, error) {
	oldKey, oldGrants := s.Key(), s.GrantsKey()
	s.ID = randomToken(16)
	s.regenerated = true
	conn := s.w.Redis()
	defer conn.Close()
	if s.w.Clustered() {
		if err := s.copyTo(conn, "HGETALL", oldKey, "HSET", s.Key()); err != nil {
			return s.ID, err
		}
		return s.ID, s.copyTo(conn, "SMEMBERS", oldGrants, "SADD", s.GrantsKey())
	}
	conn.Send("MULTI")
	conn.Send("RENAME", oldKey, s.Key())
	conn.Send("RENAME", oldGrants, s.GrantsKey())
	replies, err := redis.Values(conn.Do("EXEC"))
	if e, ok := err.(redis.Error); ok && noSuchKey(e) {
		err = nil
	}
	for _, reply := range replies {
		if e, ok := reply.(redis.Error); ok && !noSuchKey(e) && err == nil {
			err = e
		}
	}
	return s.ID, err
}

// copyTo copies a key (read whole with read, written with write), refreshes the copy's TTL
// and deletes the original. A write to the old id in between is lost (at login, it is replaced).
func (s *Session) copyTo(conn redis.Conn, read, from, write, to string) error {
	items, err := redis.Values(conn.Do(read, from))
	if err != nil || len(items) == 0 {
		return err // nothing written yet, nothing to move
	}
	if _, err := conn.Do(write, append([]any{to}, items...)...); err != nil {
		return err
	}
	if _, err := conn.Do("EXPIRE", to, s.TTL); err != nil {
		return err
	}
	_, err = conn.Do("DEL", from)
	return err
}

func noSuchKey(e redis.Error) bool {
	return strings.Contains(strings.ToLower(e.Error()), "no such key")
}

func value(raw []byte) any {
	var list []any
	if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
		return nil
	}
	return list[0]
}
