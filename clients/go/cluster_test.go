package tempest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseClusterURL(t *testing.T) {
	cases := map[string]ClusterURL{
		"redis+cluster://127.0.0.1:7000":                         {Seeds: []string{"127.0.0.1:7000"}},
		"redis+cluster://a:7000,b:7001/":                         {Seeds: []string{"a:7000", "b:7001"}},
		"redis+cluster://a:7000,b/0":                             {Seeds: []string{"a:7000", "b:6379"}},
		"redis+cluster://:s%40cret@a:1,[::1]:2":                  {Seeds: []string{"a:1", "[::1]:2"}, Password: "s@cret"},
		"redis+cluster://bob:pw@a:1/?ssl=yes&ssl_cert_reqs=none": {Seeds: []string{"a:1"}, Username: "bob", Password: "pw", TLS: true},
		"REDIS+CLUSTER://a:1?ssl=no":                             {Seeds: []string{"a:1"}},
	}
	for raw, want := range cases {
		got, err := ParseClusterURL(raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		got.Query = nil
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: %+v, want %+v", raw, *got, want)
		}
	}
	refused := map[string]string{
		"redis+cluster://a:1/1":         "database 0 only",
		"redis+cluster://":              "expected redis+cluster://",
		"redis+cluster://:pw@a:x":       "bad cluster node address",
		"redis://a:1":                   "expected redis+cluster://",
		"redis+cluster://:p%zz@a:1,b:2": "bad password",
	}
	for raw, want := range refused {
		_, err := ParseClusterURL(raw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "p%zz") {
			t.Errorf("%s: the password in the error %q", raw, err)
		}
	}
}

func TestSlot(t *testing.T) { // the slots redis-py's keyslot gives
	cases := map[string]int{"foo": 12182, "123456789": 12739, "{user1000}.following": 3443, "a{}b": 13694,
		"a{b}c{d}": 3300, "{}{x}": 3257, "q": 11958, "tempest:processing:{q}:x": 11958}
	for key, want := range cases {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestCommandKey(t *testing.T) {
	cases := []struct {
		command string
		args    []any
		key     string
		keyed   bool
	}{
		{"BLMOVE", []any{"q", "tempest:processing:{q}:w", "LEFT", "RIGHT", 1}, "q", true},
		{"EVAL", []any{"return 1", 2, "q", "p", 1}, "q", true},
		{"evalsha", []any{"abc", "1", []byte("tempest:stream:{c}"), "m"}, "tempest:stream:{c}", true},
		{"EVAL", []any{"return 1", 0}, "", false},
		{"XREAD", []any{"BLOCK", 100, "STREAMS", "tempest:gather:{g}", "0-0"}, "tempest:gather:{g}", true},
		{"PUBLISH", []any{"news", "x"}, "", false},
		{"spublish", []any{"news", "x"}, "news", true}, // sharded pub/sub: the channel's master
		{"PING", nil, "", false},
		{"MULTI", nil, "", false},
		{"SUBSCRIBE", []any{"news"}, "", false},
		{"LINDEX", []any{"tempest:body:{t}", 3}, "tempest:body:{t}", true},
		{"OBJECT", []any{"ENCODING", "k"}, "k", true},
	}
	for _, c := range cases {
		key, keyed := CommandKey(c.command, c.args)
		if key != c.key || keyed != c.keyed {
			t.Errorf("CommandKey(%s %v) = %q %v, want %q %v", c.command, c.args, key, keyed, c.key, c.keyed)
		}
	}
}

func TestRedactedClusterURL(t *testing.T) {
	cases := map[string]string{
		"redis+cluster://:s3cret@127.0.0.1:7000,127.0.0.1:7001/":         "redis+cluster://:***@127.0.0.1:7000,127.0.0.1:7001/",
		"redis+cluster://bob:s3cret@a:1,b:2?ssl=yes&ssl_ca_certs=/c.pem": "redis+cluster://bob:***@a:1,b:2?ssl=yes&ssl_ca_certs=/c.pem",
		"redis+cluster://a:1,b:2?password=s3cret":                        "redis+cluster://a:1,b:2?password=***",
		"redis+cluster://a:7000,b:7001":                                  "redis+cluster://a:7000,b:7001",
	}
	for raw, want := range cases {
		if got := Redacted(raw); got != want {
			t.Errorf("Redacted(%q) = %q, want %q", raw, got, want)
		}
	}
}
