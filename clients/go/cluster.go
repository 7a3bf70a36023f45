package tempest

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Redis Cluster (docs/protocol.md, section 7): a redis+cluster:// URL names seed nodes; each
// command goes to the master of its key's slot (CRC16 of the key or of its hash tag, modulo
// 16,384), found in the map CLUSTER SLOTS gives. MOVED records the slot's new master and has
// the map read again before the next command; ASK sends ASKING and the command to the node it
// names, once; a failed connection has the map read again too. Redigo has no cluster support,
// and Debian's redisc ships no go.mod (so no replace can name it in module mode): this is the
// small router the protocol describes.

const (
	ClusterScheme   = "redis+cluster"
	Slots           = 16384
	MaxRedirections = 5                      // MOVED or ASK followed for one command
	ClusterPoll     = 250 * time.Millisecond // a plain worker on queues in several slots blocks this long on the first
)

// keyless commands go to any master (PUBLISH too: the cluster forwards it to every node; SPUBLISH
// is routed by its channel, the default: argument 1)
var keyless = map[string]bool{"": true, "PING": true, "ECHO": true, "INFO": true, "TIME": true, "ROLE": true,
	"CLIENT": true, "CLUSTER": true, "COMMAND": true, "CONFIG": true, "AUTH": true, "HELLO": true, "SELECT": true,
	"READONLY": true, "READWRITE": true, "ASKING": true, "DBSIZE": true, "PUBLISH": true, "PUBSUB": true,
	"SCRIPT": true, "FUNCTION": true, "SLOWLOG": true, "LATENCY": true, "LASTSAVE": true, "WAIT": true, "QUIT": true,
	"MULTI": true, "EXEC": true, "DISCARD": true, "UNWATCH": true}

// ClusterURL is a parsed redis+cluster://[[user]:password@]host:port[,host:port...][/][?ssl=yes&...].
type ClusterURL struct {
	Seeds    []string // host:port, as net.JoinHostPort writes them
	Username string
	Password string
	TLS      bool       // ssl=yes (or true): TLS to every node
	Query    url.Values // the ssl_* parameters, as rediss:// takes them
}

// IsClusterURL tells whether rawURL is a redis+cluster:// URL.
func IsClusterURL(rawURL string) bool {
	return strings.HasPrefix(strings.ToLower(rawURL), ClusterScheme+"://")
}

// ParseClusterURL reads a redis+cluster:// URL (a port-less host gets 6379; a database other
// than 0 is refused: a cluster has no other). Errors never hold the password.
func ParseClusterURL(rawURL string) (*ClusterURL, error) {
	if !IsClusterURL(rawURL) {
		return nil, errors.New("expected redis+cluster://host:port[,host:port...]")
	}
	rest := rawURL[len(ClusterScheme)+3:]
	rest, rawQuery, _ := strings.Cut(rest, "?")
	rest, path, _ := strings.Cut(rest, "/")
	if path != "" && path != "0" && path != "0/" {
		return nil, errors.New("a Redis Cluster has database 0 only: no path after redis+cluster://host:port[,...]")
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("bad query in a redis+cluster:// URL: %w", err)
	}
	parsed := &ClusterURL{Query: query, TLS: yes(query.Get("ssl"))}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, password, _ := strings.Cut(rest[:at], ":")
		if parsed.Username, err = url.PathUnescape(user); err != nil {
			return nil, errors.New("bad user name in a redis+cluster:// URL")
		}
		if parsed.Password, err = url.PathUnescape(password); err != nil {
			return nil, errors.New("bad password in a redis+cluster:// URL") // not quoted: it is the secret
		}
		rest = rest[at+1:]
	}
	for _, item := range strings.Split(rest, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil { // no port (a bare IPv6 address has colons too)
			host, port = strings.Trim(item, "[]"), "6379"
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			return nil, fmt.Errorf("bad cluster node address %q", item)
		}
		parsed.Seeds = append(parsed.Seeds, net.JoinHostPort(host, port))
	}
	if len(parsed.Seeds) == 0 {
		return nil, errors.New("expected redis+cluster://host:port[,host:port...]")
	}
	return parsed, nil
}

// yes tells whether a yes/no query parameter says yes, as tempestd reads them (yes, true, 1, on).
func yes(value string) bool {
	return strings.EqualFold(value, "yes") || strings.EqualFold(value, "true") || value == "1" || strings.EqualFold(value, "on")
}

// DialOptions are the options of a connection to any node: credentials, TLS, timeouts.
func (u *ClusterURL) DialOptions(readTimeout time.Duration) ([]redis.DialOption, error) {
	options := []redis.DialOption{redis.DialConnectTimeout(5 * time.Second),
		redis.DialReadTimeout(readTimeout), redis.DialWriteTimeout(10 * time.Second)}
	if u.Password != "" {
		options = append(options, redis.DialPassword(u.Password))
		if u.Username != "" {
			options = append(options, redis.DialUsername(u.Username))
		}
	}
	if u.TLS {
		tlsOptions, err := TLSOptions("rediss://x/?" + u.Query.Encode())
		if err != nil {
			return nil, err
		}
		options = append(append(options, redis.DialUseTLS(true)), tlsOptions...)
	}
	return options, nil
}

// Slot is the cluster slot of a key: CRC16 of its hash tag (the text between the first "{"
// and the next "}", when not empty), else of the whole key, modulo 16,384.
func Slot(key string) int {
	if start := strings.IndexByte(key, '{'); start >= 0 {
		if end := strings.IndexByte(key[start+1:], '}'); end > 0 {
			key = key[start+1 : start+1+end]
		}
	}
	return int(crc16(key)) % Slots
}

// crc16 is CRC16-CCITT (XMODEM), the checksum of Redis Cluster.
func crc16(data string) uint16 {
	var crc uint16
	for i := 0; i < len(data); i++ {
		crc ^= uint16(data[i]) << 8
		for bit := 0; bit < 8; bit++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// CommandKey is the key a command is routed by, and false for a command any node answers.
func CommandKey(command string, args []any) (string, bool) {
	name := strings.ToUpper(command)
	index := 0
	switch name {
	case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO": // script numkeys key...
		if len(args) < 3 || text(args[1]) == "0" {
			return "", false
		}
		index = 2
	case "XREAD", "XREADGROUP": // ... STREAMS key... id...
		index = -1
		for i, arg := range args {
			if strings.EqualFold(text(arg), "STREAMS") {
				index = i + 1
				break
			}
		}
	case "LMPOP", "ZMPOP", "SINTERCARD", "ZINTER", "ZUNION", "ZDIFF": // numkeys key...
		index = 1
	case "BLMPOP", "BZMPOP": // timeout numkeys key...
		index = 2
	case "OBJECT", "XINFO", "XGROUP", "MEMORY": // subcommand key
		index = 1
	default:
		if keyless[name] || strings.HasSuffix(name, "SUBSCRIBE") {
			return "", false
		}
	}
	if index < 0 || index >= len(args) {
		return "", false
	}
	return text(args[index]), true
}

func text(arg any) string {
	switch v := arg.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(arg)
}

// cluster is the map of slots of one Redis Cluster and a pool of connections per master.
type cluster struct {
	seeds   []string
	options []redis.DialOption

	mu     sync.Mutex
	slots  [Slots]string // the master of each slot ("" not known)
	pools  map[string]*redis.Pool
	stale  bool // read the map again before the next command
	closed bool
}

func newCluster(rawURL string, readTimeout time.Duration) (*cluster, error) {
	parsed, err := ParseClusterURL(rawURL)
	if err != nil {
		return nil, err
	}
	options, err := parsed.DialOptions(readTimeout)
	if err != nil {
		return nil, err
	}
	return &cluster{seeds: parsed.Seeds, options: options, pools: map[string]*redis.Pool{}, stale: true}, nil
}

// refresh reads the map of slots (CLUSTER SLOTS) from the first known master or seed that gives it.
func (c *cluster) refresh() error {
	c.mu.Lock()
	candidates := c.mastersLocked()
	c.mu.Unlock()
	for _, seed := range c.seeds {
		if !contains(candidates, seed) {
			candidates = append(candidates, seed)
		}
	}
	var problems []string
	for _, address := range candidates {
		slots, err := c.readSlots(address)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", address, err))
			continue
		}
		c.mu.Lock()
		c.slots = slots
		c.stale = false
		masters := c.mastersLocked()
		for address, pool := range c.pools {
			if !contains(masters, address) { // failed over or gone: its connections are of no use
				pool.Close()
				delete(c.pools, address)
			}
		}
		c.mu.Unlock()
		return nil
	}
	return fmt.Errorf("no Redis Cluster node gave its slots (%s)", strings.Join(problems, "; "))
}

func (c *cluster) readSlots(address string) (slots [Slots]string, err error) {
	conn, err := redis.Dial("tcp", address, append(c.options, redis.DialConnectTimeout(2*time.Second),
		redis.DialReadTimeout(5*time.Second))...)
	if err != nil {
		return slots, err
	}
	defer conn.Close()
	ranges, err := redis.Values(conn.Do("CLUSTER", "SLOTS"))
	if err != nil {
		return slots, err
	}
	for _, item := range ranges { // [start, end, [ip, port, id...], replicas...]
		entry, _ := redis.Values(item, nil)
		if len(entry) < 3 {
			continue
		}
		start, _ := redis.Int(entry[0], nil)
		end, _ := redis.Int(entry[1], nil)
		master, _ := redis.Values(entry[2], nil)
		if len(master) < 2 || start < 0 || end >= Slots {
			continue
		}
		host, _ := redis.String(master[0], nil)
		port, _ := redis.Int(master[1], nil)
		if host == "" || host == "?" { // the node does not know its own address: the one asked
			host, _, _ = net.SplitHostPort(address)
		}
		for slot := start; slot <= end; slot++ {
			slots[slot] = net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
	return slots, nil
}

func (c *cluster) mastersLocked() []string {
	var masters []string
	for _, address := range c.slots {
		if address != "" && !contains(masters, address) {
			masters = append(masters, address)
		}
	}
	return masters
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

// master is the node of key's slot (any master for a keyless command), the map read first if stale.
func (c *cluster) master(key string, keyed bool) (string, error) {
	c.mu.Lock()
	stale, closed := c.stale, c.closed
	c.mu.Unlock()
	if closed {
		return "", errors.New("the cluster's connections are closed")
	}
	if stale {
		if err := c.refresh(); err != nil {
			return "", err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := rand.Intn(Slots)
	if keyed {
		slot = Slot(key)
	}
	if address := c.slots[slot]; address != "" {
		return address, nil
	}
	c.stale = true
	return "", fmt.Errorf("CLUSTERDOWN no master serves slot %d", slot)
}

// get is a pooled connection to a node.
func (c *cluster) get(address string) redis.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	pool := c.pools[address]
	if pool == nil {
		pool = &redis.Pool{
			MaxIdle:     4,
			IdleTimeout: time.Minute,
			Dial:        func() (redis.Conn, error) { return redis.Dial("tcp", address, c.options...) },
			TestOnBorrow: func(conn redis.Conn, idle time.Time) error {
				if time.Since(idle) < time.Second {
					return nil
				}
				_, err := conn.Do("PING")
				return err
			},
		}
		c.pools[address] = pool
	}
	return pool.Get()
}

// failed: a connection broke (a node down, a failover): read the map before the next command.
func (c *cluster) failed(err error) {
	var refused redis.Error
	if err != nil && !errors.As(err, &refused) {
		c.mu.Lock()
		c.stale = true
		c.mu.Unlock()
	}
}

// do runs one command on its slot's master, following MOVED and ASK (timeout < 0: the dial's).
func (c *cluster) do(timeout time.Duration, command string, args []any) (any, error) {
	key, keyed := CommandKey(command, args)
	address, err := c.master(key, keyed)
	if err != nil {
		return nil, err
	}
	asking := false
	for redirections := 0; ; redirections++ {
		conn := c.get(address)
		if asking {
			conn.Send("ASKING")
		}
		reply, err := doWithTimeout(conn, timeout, command, args)
		conn.Close()
		c.failed(err)
		kind, slot, target := redirection(err)
		if kind == "" || redirections == MaxRedirections {
			return reply, err
		}
		address, asking = target, kind == "ASK"
		if kind == "MOVED" { // the map changed: this slot's new master now, the whole map before the next command
			c.mu.Lock()
			c.slots[slot] = target
			c.stale = true
			c.mu.Unlock()
		}
	}
}

// pipeline sends commands (a MULTI ... EXEC) on one connection to key's master: their replies.
func (c *cluster) pipeline(key string, keyed bool, commands []command) ([]any, error) {
	address, err := c.master(key, keyed)
	if err != nil {
		return nil, err
	}
	conn := c.get(address)
	defer conn.Close()
	for _, cmd := range commands {
		conn.Send(cmd.name, cmd.args...)
	}
	replies, err := redis.Values(conn.Do(""))
	c.failed(err)
	if err == nil && len(replies) > 0 {
		c.failed(redirectionError(replies[len(replies)-1]))
	}
	return replies, err
}

// redirectionError: an EXECABORT caused by MOVED inside a transaction has the map read again.
func redirectionError(reply any) error {
	if e, ok := reply.(redis.Error); ok && strings.Contains(e.Error(), "MOVED") {
		return errors.New(e.Error())
	}
	return nil
}

func (c *cluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for address, pool := range c.pools {
		pool.Close()
		delete(c.pools, address)
	}
}

// redirection reads "MOVED <slot> <host:port>" or "ASK <slot> <host:port>".
func redirection(err error) (kind string, slot int, address string) {
	var refused redis.Error
	if !errors.As(err, &refused) {
		return "", 0, ""
	}
	fields := strings.Fields(refused.Error())
	if len(fields) != 3 || (fields[0] != "MOVED" && fields[0] != "ASK") {
		return "", 0, ""
	}
	slot, convErr := strconv.Atoi(fields[1])
	if convErr != nil || slot < 0 || slot >= Slots {
		return "", 0, ""
	}
	if strings.HasPrefix(fields[2], ":") { // a node that does not know its address: Redis writes ":port"
		return "", 0, ""
	}
	return fields[0], slot, fields[2]
}

func doWithTimeout(conn redis.Conn, timeout time.Duration, command string, args []any) (any, error) {
	if timeout < 0 {
		return conn.Do(command, args...)
	}
	return redis.DoWithTimeout(conn, timeout, command, args...)
}

type command struct {
	name string
	args []any
}

// clusterConn is a redis.Conn on a cluster: Do sends each command to its slot's master on a
// pooled connection of that node. Commands queued with Send run at Flush (or Do, Receive) in
// order, each to its own slot's master; a MULTI ... EXEC goes whole to the master of its first
// key (its keys must share a slot). After SUBSCRIBE or PSUBSCRIBE the connection is one node's
// (PUBLISH reaches every node). WATCH is not supported: each command may use another connection.
type clusterConn struct {
	cluster    *cluster
	err        error
	queued     []command
	replies    []any // flushed, not received yet (redis.Error values for refusals)
	subscribed redis.Conn
}

func (c *clusterConn) Do(name string, args ...any) (any, error) {
	return c.DoWithTimeout(-1, name, args...)
}

func (c *clusterConn) DoWithTimeout(timeout time.Duration, name string, args ...any) (any, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.subscribed != nil {
		return doWithTimeout(c.subscribed, timeout, name, args)
	}
	if len(c.queued) == 0 && len(c.replies) == 0 {
		if name == "" {
			return nil, nil
		}
		if strings.HasSuffix(strings.ToUpper(name), "SUBSCRIBE") {
			c.Send(name, args...)
			return nil, c.Flush()
		}
		return c.cluster.do(timeout, name, args)
	}
	if name != "" {
		c.queued = append(c.queued, command{name, args})
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	replies := c.replies
	c.replies = nil
	if name == "" {
		return replies, nil
	}
	var err error
	for _, reply := range replies {
		if e, ok := reply.(redis.Error); ok && err == nil {
			err = e
		}
	}
	return replies[len(replies)-1], err
}

func (c *clusterConn) Send(name string, args ...any) error {
	if c.err != nil {
		return c.err
	}
	if c.subscribed != nil {
		return c.subscribed.Send(name, args...)
	}
	c.queued = append(c.queued, command{name, args})
	return nil
}

// Flush runs the queued commands: a transaction whole, the others one at a time.
func (c *clusterConn) Flush() error {
	if c.err != nil {
		return c.err
	}
	if c.subscribed != nil {
		return c.subscribed.Flush()
	}
	for len(c.queued) > 0 {
		first := strings.ToUpper(c.queued[0].name)
		if strings.HasSuffix(first, "SUBSCRIBE") {
			return c.subscribe()
		}
		if first == "MULTI" {
			end := len(c.queued)
			for i, cmd := range c.queued {
				if name := strings.ToUpper(cmd.name); name == "EXEC" || name == "DISCARD" {
					end = i + 1
					break
				}
			}
			key, keyed := "", false
			for _, cmd := range c.queued[:end] {
				if key, keyed = CommandKey(cmd.name, cmd.args); keyed {
					break
				}
			}
			replies, err := c.cluster.pipeline(key, keyed, c.queued[:end])
			c.queued = c.queued[end:]
			if err != nil {
				c.queued = nil
				return err
			}
			c.replies = append(c.replies, replies...)
			continue
		}
		cmd := c.queued[0]
		c.queued = c.queued[1:]
		reply, err := c.cluster.do(-1, cmd.name, cmd.args)
		if err != nil {
			var refused redis.Error
			if !errors.As(err, &refused) {
				c.queued = nil
				return err
			}
			reply = refused
		}
		c.replies = append(c.replies, reply)
	}
	return nil
}

// subscribe makes this connection one node's, for pub/sub, the queued commands sent there.
func (c *clusterConn) subscribe() error {
	address, err := c.cluster.master("", false)
	if err != nil {
		return err
	}
	c.subscribed = c.cluster.get(address)
	for _, cmd := range c.queued {
		c.subscribed.Send(cmd.name, cmd.args...)
	}
	c.queued = nil
	return c.subscribed.Flush()
}

func (c *clusterConn) Receive() (any, error) { return c.ReceiveWithTimeout(-1) }

func (c *clusterConn) ReceiveWithTimeout(timeout time.Duration) (any, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.subscribed != nil {
		if timeout < 0 {
			return c.subscribed.Receive()
		}
		return redis.ReceiveWithTimeout(c.subscribed, timeout)
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	if c.subscribed != nil {
		return c.ReceiveWithTimeout(timeout)
	}
	if len(c.replies) == 0 {
		return nil, errors.New("no reply to receive: nothing was sent")
	}
	reply := c.replies[0]
	c.replies = c.replies[1:]
	if e, ok := reply.(redis.Error); ok {
		return nil, e
	}
	return reply, nil
}

func (c *clusterConn) Err() error {
	if c.err == nil && c.subscribed != nil {
		return c.subscribed.Err()
	}
	return c.err
}

func (c *clusterConn) Close() error {
	if c.err != nil {
		return nil
	}
	c.err = errors.New("redis: connection closed")
	c.queued, c.replies = nil, nil
	if c.subscribed != nil {
		return c.subscribed.Close()
	}
	return nil
}
