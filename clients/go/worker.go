// Package tempest is a worker client for Tempest (docs/protocol.md): it takes jobs from Redis
// queues, runs the handler of each job's action and sends the answers to tempestd's answer
// endpoint. It mirrors the Python library (tempest/worker.py).
//
// Delivery is reliable by default (jobs moved into a processing list of the worker, given back
// by tempestd if it dies); Options.NoReliable or TEMPEST_RELIABLE=0 makes it plain BLPOP.
// Low-priority jobs (tempest:low:{<queue>}) are taken once the queues are empty; a url job
// taken past its env's deadline is dropped without running. Context.Body reads a request body,
// spooled by tempestd (body_file, body_key) or inline. A redis+cluster:// URL runs it on a
// Redis Cluster (cluster.go: each command routed to its key's master).
//
//	w := tempest.NewWorker(tempest.Options{Queues: []string{"tempest"}})
//	w.On("url", func(c *tempest.Context, args []any) (any, error) {
//		return []any{200, map[string]string{"Content-Type": "text/plain"}, "Hello " + c.Env["url"].(string)}, nil
//	})
//	w.Run() // until SIGTERM or SIGINT
package tempest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gomodule/redigo/redis"
)

const (
	DefaultRedisURL = "redis://127.0.0.1:6379/0"
	PollTimeout     = time.Second // a BLPOP blocks this long, so that a stop is seen
	ReconnectMin    = 100 * time.Millisecond
	ReconnectMax    = 2 * time.Second // reconnection backoff: 0.1 s doubling up to this (the other clients' too)
	TransientMax    = ReconnectMax    // the backoff's limit for TRYAGAIN, CLUSTERDOWN, LOADING (kept for callers: the same now)
	GatherTTL       = 300             // seconds a fan-out's stream lives at most
	HTTPAction      = "url"
	ExpiredLogEvery = 10 * time.Second // between two log lines about jobs dropped past their deadline
)

// Handler runs one job: c describes it, args are the job's arguments (for a url job, [env]).
// A non-nil value is sent as the answer; an error (or a panic) is logged and answered 500.
type Handler func(c *Context, args []any) (any, error)

// Options configure a Worker; the zero value serves the queue "tempest".
type Options struct {
	Queues         []string      // BLPOP serves them in order; default ["tempest"]
	RedisURL       string        // default TEMPEST_REDIS_URL, else DefaultRedisURL
	AnswerPassword string        // default TEMPEST_ANSWER_PASSWORD
	Reliable       bool          // reliable delivery (processing list + heartbeat), whatever TEMPEST_RELIABLE says
	NoReliable     bool          // plain BLPOP (a job is lost if the worker dies), whatever TEMPEST_RELIABLE says
	Heartbeat      time.Duration // reliable: seconds without a beat after which the worker is dead; default 15 s
	NoSignals      bool          // Run does not handle SIGTERM/SIGINT
	Logger         *log.Logger   // default: stderr
}

// Worker takes jobs from its queues and calls the handler of each job's action.
type Worker struct {
	Queues    []string
	RedisURL  string
	WorkerID  string
	Reliable  bool // the delivery in use: Options.Reliable, else not Options.NoReliable, else TEMPEST_RELIABLE (default true)
	Processed int  // jobs run
	Expired   int  // url jobs taken past their deadline, dropped without running
	Log       *log.Logger

	opts       Options
	handlers   map[string]Handler
	pool       *redis.Pool // for handlers: sessions, publish, forward, gather (not on a cluster)
	cluster    *cluster    // a redis+cluster:// URL's nodes, else nil
	clusterErr error       // what is wrong with that URL, said by every dial
	queue      redis.Conn  // BLPOP / BLMOVE (nil: to (re)connect)
	stopping   atomic.Bool
	stopCh     chan struct{}
	stopOnce   sync.Once
	endpoints  map[string]*endpoint
	mu         sync.Mutex
	publisher  publisher
	holding    string // reliable: the queue whose processing list holds the job in hand
	registered bool
	expiredLog time.Time // when a job dropped past its deadline was last logged
}

// reliableFromEnv: reliable delivery unless TEMPEST_RELIABLE says 0, false, no or off (the default when unset).
func reliableFromEnv() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("TEMPEST_RELIABLE"))) {
	case "0", "false", "no", "off":
		return false
	}
	return true
}

// NewWorker makes a worker; register handlers with On, then call Run.
func NewWorker(opts Options) *Worker {
	if len(opts.Queues) == 0 {
		opts.Queues = []string{"tempest"}
	}
	if opts.RedisURL == "" {
		opts.RedisURL = os.Getenv("TEMPEST_REDIS_URL")
	}
	if opts.RedisURL == "" {
		opts.RedisURL = DefaultRedisURL
	}
	if opts.AnswerPassword == "" {
		opts.AnswerPassword = os.Getenv("TEMPEST_ANSWER_PASSWORD")
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = log.New(os.Stderr, "tempest: ", log.LstdFlags)
	}
	// an explicit option wins over the environment
	opts.Reliable = opts.Reliable || (!opts.NoReliable && reliableFromEnv())
	host, _ := os.Hostname()
	w := &Worker{
		Reliable:  opts.Reliable,
		Queues:    opts.Queues,
		RedisURL:  opts.RedisURL,
		WorkerID:  fmt.Sprintf("%s:%d:%s", host, os.Getpid(), randomHex(3)),
		Log:       opts.Logger,
		opts:      opts,
		handlers:  map[string]Handler{},
		stopCh:    make(chan struct{}),
		endpoints: map[string]*endpoint{},
	}
	if IsClusterURL(opts.RedisURL) {
		w.cluster, w.clusterErr = newCluster(opts.RedisURL, PollTimeout+10*time.Second)
	}
	w.pool = &redis.Pool{
		MaxIdle:     4,
		IdleTimeout: time.Minute,
		Dial:        func() (redis.Conn, error) { return w.dial(10 * time.Second) },
		TestOnBorrow: func(c redis.Conn, idle time.Time) error {
			if time.Since(idle) < time.Second {
				return nil
			}
			_, err := c.Do("PING")
			return err
		},
	}
	return w
}

// On registers the handler of action ("url" for HTTP requests, "ws" for WebSocket messages).
func (w *Worker) On(action string, h Handler) { w.handlers[action] = h }

// Redis gives a connection of the worker's Redis, for handlers; Close it after use. On a
// Redis Cluster, each command goes to its key's master (Send/Flush: each command, or a
// MULTI ... EXEC whole, whose keys must share a slot).
func (w *Worker) Redis() redis.Conn {
	if w.cluster != nil || w.clusterErr != nil {
		conn, _ := w.dial(0)
		return conn
	}
	return w.pool.Get()
}

// Clustered tells whether the worker's Redis is a Redis Cluster (a redis+cluster:// URL).
func (w *Worker) Clustered() bool { return w.cluster != nil }

// Stop asks Run to return once the job in hand is finished.
func (w *Worker) Stop() {
	w.stopping.Store(true)
	w.stopOnce.Do(func() { close(w.stopCh) })
}

// dial connects to the worker's Redis; on a cluster, a router whose nodes' read timeout is
// PollTimeout + 10 s whatever readTimeout says.
func (w *Worker) dial(readTimeout time.Duration) (redis.Conn, error) {
	if w.clusterErr != nil {
		return &clusterConn{err: w.clusterErr}, w.clusterErr
	}
	if w.cluster != nil {
		return &clusterConn{cluster: w.cluster}, nil
	}
	options := []redis.DialOption{redis.DialConnectTimeout(5 * time.Second),
		redis.DialReadTimeout(readTimeout), redis.DialWriteTimeout(10 * time.Second)}
	target := w.RedisURL
	sentinel := strings.HasPrefix(target, "redis+sentinel://")
	if sentinel {
		master, err := SentinelMaster(target)
		if err != nil {
			return nil, err
		}
		target = master
	}
	tlsOptions, err := TLSOptions(target)
	if err != nil {
		return nil, err
	}
	conn, err := redis.DialURL(target, append(options, tlsOptions...)...)
	if err == nil && sentinel {
		// the Sentinels' answer may be a moment old in a failover: a master, or no connection
		if role, roleErr := redis.Values(conn.Do("ROLE")); roleErr == nil && len(role) > 0 {
			if name, _ := redis.String(role[0], nil); name != "master" {
				conn.Close()
				return nil, fmt.Errorf("the Sentinels named %s, which is a %s now", Redacted(target), name)
			}
		}
	}
	return conn, err
}

// SentinelMaster asks the Sentinels of a redis+sentinel://[[user]:password@]host:port[,...]/
// service[/db] URL, in turn, where the service's master is, and returns its redis:// URL (the
// URL's credentials and database; rediss:// with its TLS parameters when ssl=yes). Its query may
// hold sentinel_password (and sentinel_username) for the Sentinels, and sentinel_ssl=yes. A new
// connection asks again: after a failover the pool dials the new master.
func SentinelMaster(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("bad Sentinel URL: %w", err)
	}
	path := strings.Split(strings.Trim(u.Path, "/"), "/")
	if u.Host == "" || path[0] == "" || len(path) > 2 {
		return "", errors.New("expected redis+sentinel://host:port[,host:port...]/service[/db]")
	}
	service, db := path[0], "0"
	if len(path) == 2 {
		db = path[1]
	}
	q := u.Query()
	options := []redis.DialOption{redis.DialConnectTimeout(2 * time.Second), redis.DialReadTimeout(2 * time.Second),
		redis.DialWriteTimeout(2 * time.Second)}
	if password := q.Get("sentinel_password"); password != "" {
		options = append(options, redis.DialPassword(password))
		if user := q.Get("sentinel_username"); user != "" {
			options = append(options, redis.DialUsername(user))
		}
	}
	if yes(q.Get("sentinel_ssl")) {
		tlsOptions, err := TLSOptions("rediss://x/?" + u.RawQuery)
		if err != nil {
			return "", err
		}
		options = append(options, redis.DialUseTLS(true))
		options = append(options, tlsOptions...)
	}
	var problems []string
	for _, address := range strings.Split(u.Host, ",") {
		if !strings.Contains(strings.TrimPrefix(address, "["), "]:") && strings.Count(address, ":") != 1 {
			address += ":26379"
		}
		conn, err := redis.Dial("tcp", address, options...)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", address, err))
			continue
		}
		reply, err := redis.Strings(conn.Do("SENTINEL", "get-master-addr-by-name", service))
		conn.Close()
		if err != nil || len(reply) != 2 {
			problems = append(problems, fmt.Sprintf("%s: no master for %s (%v)", address, service, err))
			continue
		}
		scheme, query := "redis", ""
		if yes(q.Get("ssl")) {
			scheme, query = "rediss", "?"+u.RawQuery
		}
		userinfo := ""
		if u.User != nil {
			userinfo = u.User.String() + "@"
		}
		host := reply[0]
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return fmt.Sprintf("%s://%s%s:%s/%s%s", scheme, userinfo, host, reply[1], db, query), nil
	}
	return "", fmt.Errorf("no Sentinel knows the master %s: %s", service, strings.Join(problems, "; "))
}

// TLSOptions are the dial options of a rediss:// URL's query parameters, named as tempestd
// (redis-py) takes them: ssl_ca_certs (a CA file instead of the system's), ssl_certfile and
// ssl_keyfile (a client certificate), ssl_cert_reqs=none (no verification),
// ssl_check_hostname=no (the chain verified, not the host name). redigo's DialURL reads no
// query parameter itself.
func TLSOptions(rawURL string) ([]redis.DialOption, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "rediss" {
		return nil, nil // DialURL says what is wrong with the URL
	}
	q := u.Query()
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if file := q.Get("ssl_ca_certs"); file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("ssl_ca_certs: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ssl_ca_certs: no certificate in %s", file)
		}
	}
	if cert, key := q.Get("ssl_certfile"), q.Get("ssl_keyfile"); cert != "" {
		if key == "" {
			key = cert
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("ssl_certfile: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	// redigo ignores DialTLSSkipVerify once it is given a tls.Config: the config says it
	switch {
	case strings.EqualFold(q.Get("ssl_cert_reqs"), "none"):
		config.InsecureSkipVerify = true
	case q.Has("ssl_check_hostname") && !yes(q.Get("ssl_check_hostname")):
		// Go verifies the chain and the name together, or neither: skip both, verify the chain here
		config.InsecureSkipVerify = true
		config.VerifyConnection = verifyChain(config.RootCAs)
	}
	return []redis.DialOption{redis.DialTLSConfig(config)}, nil
}

// verifyChain checks the server's certificate chain against roots (the system's when nil),
// as the handshake does, without comparing the certificate's names with the host.
func verifyChain(roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(state tls.ConnectionState) error {
		if len(state.PeerCertificates) == 0 {
			return errors.New("tls: the server sent no certificate")
		}
		intermediates := x509.NewCertPool()
		for _, cert := range state.PeerCertificates[1:] {
			intermediates.AddCert(cert)
		}
		_, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		return nil
	}
}

// sleep waits d, or less when the worker is stopped.
func (w *Worker) sleep(d time.Duration) {
	select {
	case <-w.stopCh:
	case <-time.After(d):
	}
}

// Run takes and runs jobs until Stop, SIGTERM or SIGINT; the job in hand is finished first.
func (w *Worker) Run() error {
	if !w.opts.NoSignals {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(signals)
		go func() {
			select {
			case s := <-signals:
				w.Log.Printf("%s: stopping after the job in hand", s)
				w.Stop()
			case <-w.stopCh:
			}
		}()
	}
	names := make([]string, 0, len(w.handlers))
	for name := range w.handlers {
		names = append(names, name)
	}
	mode := "not reliable"
	if w.Reliable {
		mode = "reliable, id " + w.WorkerID
	}
	w.Log.Printf("worker on %s (%s, %s): %s", strings.Join(w.Queues, ","), Redacted(w.RedisURL), mode, strings.Join(names, ", "))
	if w.cluster != nil {
		w.warnOfTaggedQueues()
	}
	var beating sync.WaitGroup
	stopBeating := make(chan struct{})
	if w.opts.Reliable {
		beating.Add(1)
		go w.beat(stopBeating, &beating)
	}
	w.loop()
	if w.opts.Reliable {
		close(stopBeating)
		beating.Wait() // no beat (which registers) after the unregistering
		w.unregister()
	}
	if w.queue != nil {
		w.queue.Close()
	}
	w.mu.Lock()
	for _, e := range w.endpoints {
		if e.conn != nil {
			e.conn.Close()
		}
	}
	w.mu.Unlock()
	w.pool.Close()
	if w.cluster != nil {
		w.cluster.close()
	}
	expired := ""
	if w.Expired > 0 {
		expired = fmt.Sprintf(" (%d dropped past their deadline)", w.Expired)
	}
	w.Log.Printf("worker stopped after %d jobs%s", w.Processed, expired)
	return nil
}

func (w *Worker) loop() {
	delay := ReconnectMin
	for !w.stopping.Load() {
		raw, err := w.take()
		if err != nil {
			var refused redis.Error
			if errors.As(err, &refused) && !transient(refused) {
				w.Log.Printf("Redis refused to give jobs: %v; retrying in %.1fs", err, ReconnectMax.Seconds())
				w.sleep(ReconnectMax)
				continue
			}
			// a lost connection, or a cluster failing over or migrating a slot (soon over)
			w.Log.Printf("Redis unreachable (%v); retrying in %.1fs", err, delay.Seconds())
			if w.queue != nil {
				w.queue.Close()
				w.queue = nil
			}
			w.sleep(delay)
			if delay *= 2; delay > ReconnectMax {
				delay = ReconnectMax
			}
			continue
		}
		delay = ReconnectMin
		if raw == nil {
			continue
		}
		w.Process(raw)
		if w.holding != "" {
			w.release()
		}
	}
}

// command runs one command on the queue connection, (re)connecting first if needed.
func (w *Worker) command(name string, args ...any) (any, error) {
	if w.queue == nil {
		conn, err := w.dial(PollTimeout + 10*time.Second)
		if err != nil {
			return nil, err
		}
		w.queue = conn
	}
	reply, err := w.queue.Do(name, args...)
	if err != nil {
		if _, refused := err.(redis.Error); !refused {
			w.queue.Close()
			w.queue = nil
		}
	}
	return reply, err
}

// take waits up to PollTimeout for the next job; nil without one. A low-priority job only
// when every queue is empty: BLPOP over the queues, then their low lists.
func (w *Worker) take() ([]byte, error) {
	if w.opts.Reliable {
		return w.takeReliable()
	}
	keys := make([]any, 0, 2*len(w.Queues)+1)
	for _, q := range w.Queues {
		keys = append(keys, q)
	}
	for _, q := range w.Queues {
		keys = append(keys, lowKey(q))
	}
	if w.cluster != nil && !sameSlot(keys) {
		return w.takeAcrossSlots(keys)
	}
	item, err := redis.ByteSlices(w.command("BLPOP", append(keys, int(PollTimeout/time.Second))...))
	if w.cluster != nil && isRefusal(err, "TRYAGAIN") { // the slot is migrating: one key at a time works
		return w.takeAcrossSlots(keys)
	}
	if err == redis.ErrNil {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item[1], nil
}

// takeAcrossSlots is take on a cluster whose queues are in several slots, where one BLPOP
// cannot name them all (CROSSSLOT), or whose slot is migrating (TRYAGAIN for several keys):
// LPOP from each queue, then from each low list, in order, then block on the first queue
// alone for ClusterPoll.
func (w *Worker) takeAcrossSlots(keys []any) ([]byte, error) {
	for _, key := range keys {
		job, err := redis.Bytes(w.command("LPOP", key))
		if err == redis.ErrNil {
			continue
		}
		return job, err
	}
	item, err := redis.ByteSlices(w.command("BLPOP", w.Queues[0], ClusterPoll.Seconds()))
	if err == redis.ErrNil {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item[1], nil
}

// transient: a refusal that a moment cures (a cluster failing over, migrating a slot, or
// redirecting more than MaxRedirections times; a Redis loading its data).
func transient(e redis.Error) bool {
	for _, prefix := range []string{"TRYAGAIN", "CLUSTERDOWN", "LOADING", "MOVED", "ASK", "MASTERDOWN"} {
		if isRefusal(e, prefix) {
			return true
		}
	}
	return false
}

func isRefusal(err error, prefix string) bool {
	var refused redis.Error
	return errors.As(err, &refused) && strings.HasPrefix(refused.Error(), prefix+" ")
}

func sameSlot(keys []any) bool {
	for _, key := range keys {
		if Slot(text(key)) != Slot(text(keys[0])) {
			return false
		}
	}
	return true
}

// warnOfTaggedQueues: on a cluster, a queue named with a hash tag of its own ({shop}.orders)
// is in its tag's slot, but its per-queue keys (tempest:low:{{shop}.orders}, the processing
// lists) hash "{shop" instead: reliable delivery's moves from the queue to its processing list
// are refused (CROSSSLOT). A plain worker takes from such a queue (one key at a time).
func (w *Worker) warnOfTaggedQueues() {
	for _, q := range w.Queues {
		if w.Reliable && Slot(q) != Slot(w.processing(q)) {
			w.Log.Printf("queue %s: its hash tag puts it in slot %d, its processing list in slot %d: on a Redis "+
				"Cluster, reliable delivery from it is refused (CROSSSLOT)", q, Slot(q), Slot(w.processing(q)))
		}
	}
}

// Process runs the handler of one raw job; a malformed job is logged and dropped, a failed
// handler answered 500 (a missing one 501).
func (w *Worker) Process(raw []byte) {
	c, args, err := w.decode(raw)
	if err != nil {
		w.Log.Printf("dropped malformed job %.200q: %v", raw, err)
		return
	}
	if deadline, ok := c.Env["deadline"].(float64); ok {
		if late := float64(time.Now().UnixNano())/1e9 - deadline; late > 0 {
			w.expire(c.JobID, late)
			return
		}
	}
	w.Processed++
	handler := w.handlers[c.Action]
	if handler == nil {
		w.Log.Printf("no handler for action %q (job %s)", c.Action, c.JobID)
		w.answerError(c, 501, "Not Implemented")
		return
	}
	result, err := w.call(handler, c, args)
	if err != nil {
		w.Log.Printf("handler of %q failed on job %s: %v", c.Action, c.JobID, err)
		if c.openStream != nil {
			c.openStream.Abort() // its head is gone: the client's body is cut
		}
		w.answerError(c, 500, "Internal Server Error")
		return
	}
	if result != nil {
		if err := c.Answer(result); err != nil {
			w.Log.Printf("cannot answer job %s: %v", c.JobID, err)
		}
	}
}

// expire counts a job taken past its deadline (nobody waits for its answer any more), logged
// once every ExpiredLogEvery at most.
func (w *Worker) expire(jobID string, late float64) {
	w.Expired++
	if time.Since(w.expiredLog) >= ExpiredLogEvery {
		w.expiredLog = time.Now()
		w.Log.Printf("dropped job %s taken %.3fs past its deadline (%d dropped so far)", jobID, late, w.Expired)
	}
}

// call runs a handler, a panic becoming an error.
func (w *Worker) call(h Handler, c *Context, args []any) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h(c, args)
}

func (w *Worker) decode(raw []byte) (*Context, []any, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 4 {
		return nil, nil, errors.New("a job is a JSON list of four elements")
	}
	c := &Context{Worker: w}
	var args []any
	if json.Unmarshal(parts[0], &c.Action) != nil || json.Unmarshal(parts[1], &args) != nil || args == nil {
		return nil, nil, errors.New("a job's action is a string and its args a list")
	}
	var respondTo *string
	if json.Unmarshal(parts[2], &respondTo) != nil {
		return nil, nil, errors.New("a job's respond_to is 'host:port' or null")
	}
	if respondTo != nil {
		c.RespondTo = *respondTo
	}
	if json.Unmarshal(parts[3], &c.JobID) != nil { // not a string: a number pushed by hand, sent as its text
		c.JobID = strings.TrimSpace(string(parts[3]))
	}
	if c.Action == HTTPAction && len(args) > 0 {
		c.Env, _ = args[0].(map[string]any)
	}
	return c, args, nil
}

// answerError answers a job nobody answered (not a ws job), under its action when this worker
// has a handler for it (declared with ACTIONS), else under url.
func (w *Worker) answerError(c *Context, status int, reason string) {
	if c.Action == "ws" || c.answered > 0 {
		return
	}
	if _, ok := w.handlers[c.Action]; !ok {
		c.Action = HTTPAction
	}
	answer := []any{status, map[string]string{"Content-Type": "text/plain"}, fmt.Sprintf("%d %s\n", status, reason)}
	if err := c.Answer(answer); err != nil {
		w.Log.Printf("cannot answer job %s: %v", c.JobID, err)
	}
}

// encode is JSON without HTML escapes (the protocol's codec: compact UTF-8).
func encode(v any) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(strings.TrimSuffix(b.String(), "\n")), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	urlPassword   = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@`)
	queryPassword = regexp.MustCompile(`([?&](?:password|sentinel_password|ssl_password)=)[^&\s]*`)
)

// Redacted is a Redis URL for a log line: its passwords (user info, password=,
// sentinel_password=, ssl_password=) replaced by ***, as tempestd prints URLs.
func Redacted(url string) string {
	return queryPassword.ReplaceAllString(urlPassword.ReplaceAllString(url, "${1}:***@"), "${1}***")
}
