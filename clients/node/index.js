'use strict';
/**
 * tempest-worker: a Tempest worker in Node.js, on node-redis (v4).
 *
 * It speaks the wire protocol of docs/protocol.md (the 2012 protocol plus its extensions):
 * jobs are taken from Redis lists with BLMOVE into a processing list of the worker (reliable
 * delivery, the default; plain BLPOP with `reliable: false` or TEMPEST_RELIABLE=0), low-priority
 * jobs from `tempest:low:{<queue>}` once the queue is empty, and a url job taken past its env's
 * `deadline` is dropped unrun. Answers are sent as
 * `<action> <job_id> <json>` to the job's `respond_to` endpoint. A handler reads a request body
 * spooled by tempestd (`body_file`, `body_key`) or inline with `context.bodyStream()` or
 * `context.body()`. The vocabulary is the Python
 * library's (tempest/worker.py):
 *
 *   const { Worker } = require('tempest-worker');
 *   const worker = new Worker('tempest');
 *   worker.on('url', async (context, env) => [200, {'Content-Type': 'text/plain'}, 'Hello ' + env.url]);
 *   worker.run().then(() => process.exit(0));
 */

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const { Readable } = require('stream');
const { createClient, ErrorReply, MultiErrorReply } = require('redis');
const { ClusterClient, keySlot } = require('./cluster');

const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379/0';
const POLL_TIMEOUT = 1; // seconds a BLPOP blocks, so that a stop request is seen within it
const CLUSTER_POLL = 0.25; // seconds the first queue blocks when the queues are in several slots of a cluster
const COMMAND_GRACE = 10000; // ms a blocking command may take beyond its own timeout: then the connection is dead
const ANSWER_TIMEOUT = 10000; // ms an answer endpoint may take to reply
const RECONNECT_MIN = 100; // ms
const RECONNECT_MAX = 2000; // ms between reconnection attempts, at most (the take loop's and node-redis')
// the error replies of a Redis that will answer again soon, retried as a lost connection is: a
// cluster failing over (CLUSTERDOWN, TRYAGAIN), a replica's sync, a Redis loading its data
const PASSING_ERRORS = /^(CLUSTERDOWN|TRYAGAIN|MASTERDOWN|LOADING)\b/;
const ANSWER_ACTIONS = ['url', 'ws']; // the actions every answer endpoint knows
const GATHER_TTL = 300; // seconds a fan-out's stream lives at most (the gatherer deletes it)
const SESSION_TTL = 14 * 24 * 3600; // [front] session_ttl's default
const REGENERATED_HEADER = 'X-Tempest-Session';
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;
const DURABLE_CONFIG = 'tempest:pubsub:durable';
const SHARDED_CONFIG = 'tempest:pubsub:sharded'; // "1": tempestd relays sharded pub/sub, publish with SPUBLISH
const DURABLE_CACHE = 5000; // ms a publisher trusts its copy of the durable patterns and of the sharded flag
const WORKERS = 'tempest:workers';
const EXPIRED_LOG_EVERY = 10000; // ms between two info lines about jobs dropped past their deadline
const BODY_BLOCK = 256 * 1024; // bytes read from a spooled file at a time (a Redis chunk's size)

// tempest/reliable.py's scripts, verbatim
const TAKE = `
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not job then break end
  out[#out + 1] = job
end
return out
`;
const GIVE_BACK_ALL = `
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
`;
// tempest/publish.py's script: XADD and PUBLISH in one step
const PUBLISH_DURABLE = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({'$durable', id, ARGV[1]}))
return id
`;
// the same with sharded pub/sub ([pubsub] sharded): the channel is in its stream's slot
const SPUBLISH_DURABLE = PUBLISH_DURABLE.replace("'PUBLISH'", "'SPUBLISH'");

const keys = {
  session: (id) => 'session:' + id,
  grants: (id) => 'tempest:grants:' + id,
  processing: (queue, workerId) => 'tempest:processing:{' + queue + '}:' + workerId,
  alive: (workerId) => 'tempest:alive:' + workerId,
  low: (queue) => 'tempest:low:{' + queue + '}',
  gather: (gid) => 'tempest:gather:{' + gid + '}',
  stream: (channel) => 'tempest:stream:{' + channel + '}',
};

const log = {
  at(level, message) {
    process.stderr.write(`${new Date().toISOString()} ${level} tempest-worker[${process.pid}]: ${message}\n`);
  },
  info(message) { this.at('INFO', message); },
  warn(message) { this.at('WARNING', message); },
  error(message) { this.at('ERROR', message); },
  debug(message) { if (process.env.TEMPEST_DEBUG) this.at('DEBUG', message); },
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection after `ms` (a peer that accepted a command and never replied). */
async function withTimeout(promise, ms, what) {
  let timer;
  const late = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no reply to ${what} within ${ms / 1000}s`), { hung: true })), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** JSON text of an answer; throws for what JSON cannot carry (undefined, a function, a BigInt). */
function encode(data) {
  const text = JSON.stringify(data);
  if (text === undefined) throw new TypeError(`cannot send ${typeof data} as JSON`);
  return text;
}
const backoff = (retries) => Math.min(RECONNECT_MIN * 2 ** retries, RECONNECT_MAX);
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
const randomId = (bytes) => crypto.randomBytes(bytes).toString('base64url');

/** Reliable delivery unless TEMPEST_RELIABLE says 0, false, no or off (the default when unset). */
function reliableFromEnv(value = process.env.TEMPEST_RELIABLE) {
  return !/^\s*(0|false|no|off)\s*$/i.test(value || '');
}

/**
 * Decode a job envelope: [action, args, respond_to, job_id]. The job id comes back as a
 * string: a number (a job pushed by hand) as its decimal text, exactly as written.
 */
function decodeJob(raw) {
  const job = JSON.parse(raw);
  if (!Array.isArray(job) || job.length !== 4) throw new Error('a job is a JSON list of four elements');
  let [action, args, respondTo, jobId] = job;
  if (typeof action !== 'string' || !Array.isArray(args)) throw new Error("a job's action is a string and its args a list");
  if (respondTo !== null && typeof respondTo !== 'string') throw new Error("a job's respond_to is 'host:port' or null");
  if (typeof jobId === 'number') {
    const literal = /,\s*(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*\]\s*$/.exec(raw);
    jobId = literal && /^-?\d+$/.test(literal[1]) ? literal[1] : String(jobId); // beyond 2^53 too
  } else if (typeof jobId !== 'string') {
    jobId = JSON.stringify(jobId);
  }
  return [action, args, respondTo, jobId];
}

/** A url answer [status, headers, body] with one more header (headers an object, pairs or missing). */
function withHeader(answer, name, value) {
  if (!Array.isArray(answer) || answer.length === 0) return answer;
  answer = answer.slice();
  const headers = answer.length > 1 ? answer[1] : undefined;
  let updated;
  if (Array.isArray(headers)) updated = [...headers, [name, value]];
  else if (isObject(headers)) updated = { ...headers, [name]: value };
  else if (headers === undefined || headers === null) updated = { [name]: value };
  else return answer;
  if (answer.length > 1) answer[1] = updated; else answer.push(updated);
  return answer;
}

/** fnmatch.fnmatchcase's patterns (* ? [seq] [!seq]) as a RegExp. */
function fnmatch(pattern) {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) { out += '\\['; continue; }
      let set = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
      if (set[0] === '!') set = '^' + set.slice(1); else if (set[0] === '^') set = '\\' + set;
      out += '[' + set + ']';
      i = end;
    } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp('^' + out + '$', 's');
}

// HSET the field/value pairs of ARGV[2...] and EXPIRE the hash (ARGV[1] seconds), at once
const SESSION_WRITE = `
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return redis.call('EXPIRE', KEYS[1], ARGV[1])
`;
// SADD the patterns of ARGV[2...] and EXPIRE the set (ARGV[1] seconds), at once
const GRANTS_WRITE = `
for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
return redis.call('EXPIRE', KEYS[1], ARGV[1])
`;
const CONTROL = /[\x00-\x1f\x7f]/;

/** A grant's pattern as given, or a TypeError: a non-empty string without control characters. */
function checkedPattern(pattern) {
  if (typeof pattern !== 'string' || pattern === '' || CONTROL.test(pattern)) {
    throw new TypeError(`not a channel pattern (a non-empty string without control characters): ${JSON.stringify(pattern)}`);
  }
  return pattern;
}

/**
 * A session as a worker sees it: the Redis hash session:<id>, each value the JSON list [value].
 * Reads go to Redis every time; every write sets the hash's TTL again (HSET and EXPIRE in one
 * script, one key: the same on a Redis Cluster). Its grants, the set tempest:grants:<id> of the
 * private channels it may subscribe to (docs/protocol.md, section 5), follow the hash:
 * regenerate() moves both, clear() deletes both.
 */
class Session {
  constructor(redis, id, ttl) {
    this.redis = redis;
    this.id = id;
    this.ttl = Math.trunc(ttl);
    this.regenerated = false;
  }

  get key() { return keys.session(this.id); }

  async get(field, fallback = null) {
    const raw = await this.redis.sendCommand(['HGET', this.key, field]);
    return raw === null || raw === undefined ? fallback : Session.value(raw, fallback);
  }

  async set(field, value) { return this.update({ [field]: value }); }

  async update(values) {
    const fields = Object.entries(values);
    if (fields.length === 0) return;
    const pairs = fields.flatMap(([field, value]) => [field, JSON.stringify([value])]);
    await this.redis.sendCommand(['EVAL', SESSION_WRITE, '1', this.key, String(this.ttl), ...pairs]);
  }

  async delete(field) { return (await this.redis.sendCommand(['HDEL', this.key, field])) > 0; }

  async has(field) { return Boolean(await this.redis.sendCommand(['HEXISTS', this.key, field])); }

  async all() {
    const flat = await this.redis.sendCommand(['HGETALL', this.key]);
    const fields = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]] = Session.value(flat[i + 1], null);
    return fields;
  }

  /**
   * Forget every field and every grant (logout); the id stays: regenerate() it too. One DEL of
   * both keys; on a Redis Cluster, where they are in two slots, one DEL per key. Private streams
   * of the session end within [pubsub] grant_check.
   */
  async clear() {
    const grants = keys.grants(this.id);
    if (this.redis.isCluster) {
      await Promise.all([this.redis.sendCommand(['DEL', this.key]), this.redis.sendCommand(['DEL', grants])]);
    } else {
      await this.redis.sendCommand(['DEL', this.key, grants]);
    }
  }

  /**
   * A new id for the same fields and grants (call it at login); the answer carries
   * X-Tempest-Session. On one Redis both keys are RENAMEd in one MULTI ("no such key", a key
   * never written, is no failure); on a Redis Cluster, where the new keys' slots are not the old
   * ones', each key is copied (HGETALL, then HSET and EXPIRE in one script; SMEMBERS, then SADD
   * and EXPIRE) and the old ones deleted: a write to the old id in between is lost
   * (docs/protocol.md, section 7).
   */
  async regenerate() {
    const old = this.id;
    this.id = randomId(16);
    if (this.redis.isCluster) {
      await this._copy(old);
    } else {
      try {
        await this.redis.multi()
          .addCommand(['RENAME', keys.session(old), this.key])
          .addCommand(['RENAME', keys.grants(old), keys.grants(this.id)])
          .exec();
      } catch (error) {
        const failures = error instanceof MultiErrorReply ? error.errorIndexes.map((i) => error.replies[i]) : [error];
        const other = failures.find((failure) => !/no such key/i.test(String(failure && failure.message)));
        if (other) throw other; // "no such key": nothing written yet, nothing to move
      }
    }
    this.regenerated = true;
    return this.id;
  }

  /** Regenerate on a cluster: the old id's fields and grants written under the new id (the
   * bytes as they are, each key with the session's TTL), then the old keys deleted. */
  async _copy(old) {
    const ttl = String(this.ttl);
    const flat = await this.redis.sendCommand(['HGETALL', keys.session(old)], { returnBuffers: true });
    if (flat.length) await this.redis.sendCommand(['EVAL', SESSION_WRITE, '1', this.key, ttl, ...flat]);
    const patterns = await this.redis.sendCommand(['SMEMBERS', keys.grants(old)], { returnBuffers: true });
    if (patterns.length) await this.redis.sendCommand(['EVAL', GRANTS_WRITE, '1', keys.grants(this.id), ttl, ...patterns]);
    await Promise.all([this.redis.sendCommand(['DEL', keys.session(old)]), this.redis.sendCommand(['DEL', keys.grants(old)])]);
  }

  // grants: the private channels ([pubsub] private) this session may subscribe to

  /**
   * Let this session subscribe to the private channels matching `patterns` (fnmatch:
   * 'user.42.*'), at once, for the session's lifetime: SADD and EXPIRE in one script (one key:
   * the same on a Redis Cluster). A pattern is matched as it is: '*' grants every private
   * channel; escape * ? [ in a pattern built from untrusted text (put each in brackets: '[*]').
   * Throws a TypeError, before writing anything, for an empty pattern or one with control
   * characters.
   */
  async grant(...patterns) {
    const checked = patterns.map(checkedPattern);
    if (checked.length === 0) return;
    await this.redis.sendCommand(['EVAL', GRANTS_WRITE, '1', keys.grants(this.id), String(this.ttl), ...checked]);
  }

  /** Take grants back (SREM): a live stream they allowed ends within [pubsub] grant_check. A
   * pattern never granted is ignored; revoke a pattern as it was granted. */
  async revoke(...patterns) {
    if (patterns.length) await this.redis.sendCommand(['SREM', keys.grants(this.id), ...patterns.map(String)]);
  }

  /** The patterns granted to this session (SMEMBERS), as a Set of strings. */
  async grants() {
    return new Set(await this.redis.sendCommand(['SMEMBERS', keys.grants(this.id)]));
  }

  static value(raw, fallback) {
    try {
      const value = JSON.parse(raw);
      return Array.isArray(value) && value.length ? value[0] : fallback;
    } catch (error) {
      return fallback;
    }
  }
}

/**
 * A spooled request body that is no longer there (its request was answered, timed out or its
 * client left; a Redis body expired), or not the bytes its token describes (shorter than its
 * `size`, another `sha256`). The Python library's tempest.spool.BodyGone; `code` is 'ENOENT'.
 */
class BodyGone extends Error {
  constructor(message) {
    super(message);
    this.name = 'BodyGone';
    this.code = 'ENOENT';
  }
}

/** A spooled file in blocks of BODY_BLOCK bytes; closed when the reader stops. */
async function* fileBlocks(path) {
  let handle;
  try {
    handle = await fs.promises.open(path, 'r');
  } catch (error) {
    if (error.code === 'ENOENT') throw new BodyGone(`spooled body ${path} is gone`);
    throw error;
  }
  try {
    for (;;) {
      const buffer = Buffer.allocUnsafe(BODY_BLOCK);
      const { bytesRead } = await handle.read(buffer, 0, BODY_BLOCK, null);
      if (bytesRead === 0) return;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** The chunks of a Redis body, one LINDEX each as the reader gets to it (binary replies). */
async function* redisChunks(redis, key, chunks) {
  for (let index = 0; index < chunks; index++) {
    const chunk = await redis.sendCommand(['LINDEX', key, String(index)], { returnBuffers: true });
    if (!chunk || chunk.length === 0) throw new BodyGone(`spooled body ${key}: chunk ${index} of ${chunks} is gone`);
    yield chunk;
  }
}

/**
 * The body of a url job's env as Buffers, in order, wherever it is (docs/protocol.md, "Spooled
 * bodies"): the spooled file (`body_file`, read in blocks), the Redis chunks (`body_key`,
 * fetched one at a time with `redis`, a node-redis client of the queues' Redis), or the inline
 * `body` / `body_base64`. A spooled body is read up to its token's `size` and hashed on the
 * way; one shorter than `size`, or whose SHA-256 is not the token's, throws BodyGone before its
 * last block is given out.
 */
async function* bodyChunks(env, redis) {
  const file = isObject(env.body_file) ? env.body_file : null;
  const stored = file || (isObject(env.body_key) ? env.body_key : null);
  if (!stored) {
    const inline = typeof env.body_base64 === 'string' ? Buffer.from(env.body_base64, 'base64')
      : Buffer.from(typeof env.body === 'string' ? env.body : '', 'utf8');
    if (inline.length) yield inline;
    return;
  }
  const size = Number(stored.size);
  if (!Number.isSafeInteger(size) || size < 0) throw new TypeError(`a spooled body's token without a size: ${JSON.stringify(stored)}`);
  const where = file ? file.path : stored.key;
  const hash = crypto.createHash('sha256');
  let read = 0;
  const source = file ? fileBlocks(file.path) : redisChunks(redis, stored.key, Number(stored.chunks) || 0);
  const check = () => {
    const digest = hash.digest('hex');
    if (typeof stored.sha256 === 'string' && digest !== stored.sha256.toLowerCase()) {
      throw new BodyGone(`spooled body ${where}: its sha256 is ${digest}, not ${stored.sha256} as its token says`);
    }
  };
  if (size === 0) return check();
  for await (let block of source) {
    if (read + block.length > size) block = block.subarray(0, size - read); // read `size` bytes, no more
    hash.update(block);
    read += block.length;
    if (read === size) { // the last block: given out only once the whole body is checked
      check();
      yield block;
      return;
    }
    yield block;
  }
  throw new BodyGone(`spooled body ${where} is gone (${read} of ${size} bytes read)`);
}

/** The body of a streamed answer (Context.stream). */
class Stream {
  constructor(context) {
    this.context = context;
    this.closed = false;
  }

  /** Send a piece of the body (a Buffer, or a string sent as UTF-8). */
  async write(data) {
    if (this.closed) throw new Error('write to a closed stream');
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    if (bytes.length === 0) return true;
    const { worker, respondTo, jobId } = this.context;
    return worker.sendCommand(respondTo, ['chunk', jobId, bytes]);
  }

  /** End the body. */
  async close() { return this.end(); }

  /** Give up: tempestd cuts the client's body (no last chunk), so the client can tell. */
  async abort() { return this.end('abort'); }

  async end(...how) {
    if (this.closed) return false;
    this.closed = true;
    const { worker, respondTo, jobId } = this.context;
    return worker.sendCommand(respondTo, ['end', jobId, ...how]);
  }
}

/** What a handler knows about its job, and how it answers. */
class Context {
  constructor(worker, action, respondTo, jobId, env = null) {
    this.worker = worker;
    this.action = action;
    this.respondTo = respondTo;
    this.jobId = jobId;
    this.env = env; // a url job's env (null for other actions)
    this.answered = 0;
    this.openStream = null;
    this._session = undefined;
  }

  /** The request's Session, or null without [front] session_cookie (or for other actions). */
  get session() {
    if (this._session === undefined) {
      const info = this.env && this.env.session;
      this._session = isObject(info) && typeof info.id === 'string' && SESSION_ID.test(info.id)
        ? new Session(this.worker.redis, info.id, info.ttl || SESSION_TTL) : null;
    }
    return this._session;
  }

  _regenerated() { return Boolean(this._session && this._session.regenerated); }

  /**
   * The request body as a Readable stream of Buffers, wherever it is: spooled by tempestd to a
   * file on this host (`env.body_file`, streamed from the file) or to Redis (`env.body_key`,
   * its chunks fetched as they are read), or inline in the job (`body`, `body_base64`). A
   * spooled body is checked against its token's size and sha256 as it streams: the stream
   * emits a BodyGone error (instead of its last block and 'end') when the body is gone or not
   * what its token says.
   */
  bodyStream() {
    return Readable.from(bodyChunks(this.env || {}, this.worker.redis), { objectMode: false });
  }

  /** The whole request body as a Buffer (in memory: for a large spooled body, prefer bodyStream()); rejects with BodyGone as bodyStream() errors. */
  async body() {
    const blocks = [];
    for await (const block of bodyChunks(this.env || {}, this.worker.redis)) blocks.push(block);
    return Buffer.concat(blocks);
  }

  /** Send an answer (several allowed). False if nobody waits (no respond_to) or it failed. */
  async answer(data) {
    if (this._regenerated() && this.action === 'url') data = withHeader(data, REGENERATED_HEADER, this._session.id);
    const payload = encode(data); // throws before anything counts as answered
    this.answered += 1;
    return this.worker.sendCommand(this.respondTo, [this.action, this.jobId, payload]);
  }

  /** Begin a streamed answer: the head now, then write()s, then close() (or abort()). */
  async stream(status = 200, headers = {}) {
    let head = [status, headers || {}];
    if (this._regenerated()) head = withHeader(head, REGENERATED_HEADER, this._session.id);
    const payload = encode(head);
    this.answered += 1;
    this.openStream = new Stream(this);
    await this.worker.sendCommand(this.respondTo, ['stream', this.jobId, payload]);
    return this.openStream;
  }

  /** Pass the job on to `queue` as an `action` job: its worker answers the waiting client. */
  async forward(queue, action, ...args) {
    this.answered += 1; // someone else answers: no 500 for a handler that returns nothing
    await this.worker.push(queue, JSON.stringify([action, args, this.respondTo, this.jobId]));
  }

  /** Fan out [queue, action, args] parts; their answers in order, null for a missing one. */
  async gather(parts, timeout = 5.0) {
    if (!this.respondTo) throw new Error("gather needs a job with respond_to (the answer endpoint relays the parts' answers)");
    return this.worker.gather(this.respondTo, parts, timeout);
  }
}

/**
 * Takes jobs from one or more queues and calls the handler of each job's action.
 *
 * Options: redisUrl (default TEMPEST_REDIS_URL, else redis://127.0.0.1:6379/0), answerPassword
 * (default TEMPEST_ANSWER_PASSWORD), reliable (default true, unless TEMPEST_RELIABLE is 0, false,
 * no or off; `reliable: false` opts out whatever the environment says), heartbeat (seconds, 15).
 *
 * Counters: `processed` (jobs run), `expired` (url jobs dropped unrun past their deadline).
 */
const TLS_PARAMS = ['ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile', 'ssl_cert_reqs', 'ssl_check_hostname'];

/** The TLS socket options that the query parameters tempestd takes (redis-py's: ssl_ca_certs,
 * ssl_certfile, ssl_keyfile, ssl_cert_reqs, ssl_check_hostname) mean (files read now). */
function tlsSocket(params) {
  const file = (key) => (params.get(key) ? fs.readFileSync(params.get(key)) : undefined);
  const socket = { tls: true, ca: file('ssl_ca_certs'), cert: file('ssl_certfile'), key: file('ssl_keyfile') };
  if (params.get('ssl_cert_reqs') === 'none') socket.rejectUnauthorized = false;
  if (/^(false|no|0|off)$/i.test(params.get('ssl_check_hostname') || '')) socket.checkServerIdentity = () => undefined;
  for (const key of Object.keys(socket)) if (socket[key] === undefined) delete socket[key];
  return socket;
}

/** What createClient needs of TEMPEST_REDIS_URL: the URL without the TLS query parameters
 * and, for rediss://, the socket options they mean. */
function redisTarget(url) {
  const parsed = new URL(url);
  const params = parsed.searchParams;
  const socket = parsed.protocol === 'rediss:' ? tlsSocket(params) : {};
  if (!TLS_PARAMS.some((key) => params.has(key))) return { url, socket };
  for (const key of TLS_PARAMS) params.delete(key);
  return { url: parsed.toString(), socket };
}

/** The parts of redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db], its
 * query's sentinel_password and sentinel_username being the Sentinels' credentials, ssl=yes and
 * sentinel_ssl=yes TLS to the master and to the Sentinels (the socket options of the ssl_*
 * parameters, the same for both). */
function sentinelTarget(url) {
  const match = /^redis\+sentinel:\/\/(?:([^@/]*)@)?([^/?]+)\/([^/?]+)(?:\/(\d+))?\/?(?:\?(.*))?$/.exec(url);
  if (!match) throw new Error('expected redis+sentinel://host:port[,host:port...]/service[/db]');
  const [, userinfo = '', hosts, service, db = '0', query = ''] = match;
  const params = new URLSearchParams(query);
  const [username, password] = userinfo.split(':').map((part) => decodeURIComponent(part));
  const sentinels = hosts.split(',').map((address) => {
    const colon = address.lastIndexOf(':');
    return colon > 0 ? { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) }
      : { host: address, port: 26379 };
  });
  const yes = (key) => /^(yes|true|1|on)$/i.test(params.get(key) || '');
  return { sentinels, service: decodeURIComponent(service), database: Number(db), username: username || undefined,
    password: password || undefined, sentinelUsername: params.get('sentinel_username') || undefined,
    sentinelPassword: params.get('sentinel_password') || undefined,
    masterSocket: yes('ssl') ? tlsSocket(params) : {}, sentinelSocket: yes('sentinel_ssl') ? tlsSocket(params) : {} };
}

/** The seeds, credentials and TLS socket options of
 * redis+cluster://[[user]:password@]host:port[,host:port...][/][?ssl=yes&ssl_ca_certs=...]
 * (a cluster has database 0 only: no other path). */
function clusterTarget(url) {
  const match = /^redis\+cluster:\/\/(?:([^/?]*)@)?([^@/?]+)(\/[^?]*)?(?:\?(.*))?$/.exec(url);
  if (!match) throw new Error('expected redis+cluster://host:port[,host:port...]');
  const [, userinfo = '', hosts, path = '', query = ''] = match;
  if (!['', '/', '/0'].includes(path)) {
    throw new Error('a Redis Cluster has database 0 only: no path after redis+cluster://host:port[,...]');
  }
  const params = new URLSearchParams(query);
  const colon = userinfo.indexOf(':'); // without one, a user name alone (as tempestd reads it)
  const username = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
  const password = colon < 0 ? '' : decodeURIComponent(userinfo.slice(colon + 1));
  const seeds = hosts.split(',').filter(Boolean).map((address) => {
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(address); // [::1]:7000
    if (bracketed) return { host: bracketed[1], port: Number(bracketed[2] || 6379) };
    const at = address.lastIndexOf(':');
    return at > 0 ? { host: address.slice(0, at), port: Number(address.slice(at + 1)) } : { host: address, port: 6379 };
  });
  const ssl = /^(yes|true|1|on)$/i.test(params.get('ssl') || '');
  return { seeds, username: username || undefined, password: password || undefined, socket: ssl ? tlsSocket(params) : {} };
}

/** {host, port} of the service's master, from the first of the Sentinels that knows it. */
async function askSentinels(target) {
  const problems = [];
  for (const sentinel of target.sentinels) {
    const client = createClient({ socket: { ...target.sentinelSocket, ...sentinel, connectTimeout: 2000, reconnectStrategy: false },
      username: target.sentinelUsername, password: target.sentinelPassword });
    client.on('error', () => {});
    try {
      await withTimeout(client.connect(), 3000, 'connect');
      const reply = await withTimeout(client.sendCommand(['SENTINEL', 'get-master-addr-by-name', target.service]),
        3000, 'SENTINEL');
      if (Array.isArray(reply) && reply.length === 2) return { host: String(reply[0]), port: Number(reply[1]) };
      problems.push(`${sentinel.host}:${sentinel.port}: no master for ${target.service}`);
    } catch (error) {
      problems.push(`${sentinel.host}:${sentinel.port}: ${error.message || error}`);
    } finally {
      client.disconnect().catch(() => {});
    }
  }
  throw new Error(`no Sentinel knows the master ${target.service}: ${problems.join('; ')}`);
}

/** A Redis client's errors (each lost connection, each failed reconnection) as a warning, at
 * most one every 5 s. */
function warnOfErrors(client) {
  let last = 0;
  client.on('error', (error) => {
    if (Date.now() - last > 5000) log.warn(`Redis: ${error.message || error}`);
    last = Date.now();
  });
}

/** A Redis URL for a log line: its passwords (user info, password=, sentinel_password=,
 * ssl_password=) replaced by ***, as tempestd prints URLs. */
function redacted(url) {
  return String(url)
    .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/@\s]*):[^@/\s]*@/, '$1:***@')
    .replace(/([?&](?:password|sentinel_password|ssl_password)=)[^&\s]*/g, '$1***');
}

class Worker {
  constructor(queues = 'tempest', options = {}) {
    this.queues = typeof queues === 'string' ? [queues] : [...queues];
    this.redisUrl = options.redisUrl || process.env.TEMPEST_REDIS_URL || DEFAULT_REDIS_URL;
    this.answerPassword = options.answerPassword || process.env.TEMPEST_ANSWER_PASSWORD || null;
    this.reliable = options.reliable === undefined || options.reliable === null ? reliableFromEnv() : Boolean(options.reliable);
    this.heartbeat = Number(options.heartbeat || 15);
    this.workerId = `${os.hostname()}:${process.pid}:${crypto.randomBytes(3).toString('hex')}`;
    this.handlers = new Map();
    this.stopping = false;
    this.processed = 0;
    this.expired = 0; // url jobs taken past their deadline, dropped without running
    this._expiredLogged = -Infinity;
    this.onCluster = this.redisUrl.startsWith('redis+cluster://');
    if (this.onCluster && this.reliable) {
      // a { in a queue's name makes another hash tag of tempest:processing:{<queue>}:<id>: its slot
      // is not the queue's, and moving a job between them is refused (CROSSSLOT)
      const apart = this.queues.find((queue) => keySlot(queue) !== keySlot(keys.processing(queue, '')));
      if (apart !== undefined) {
        throw new Error(`queue ${apart}: on a Redis Cluster its processing list ${keys.processing(apart, '<id>')} is in `
          + "another slot (a { in the queue's name): reliable delivery cannot move its jobs; name the queue without {, "
          + 'or use reliable: false');
      }
    }
    // for the handlers, publish and the heartbeat; commands fail at once while Redis is away
    this.redis = this._client();
    this._blocking = null; // BLPOP/BLMOVE/XREAD: its own connection, replaced if it hangs
    this._endpoints = new Map(); // respond_to -> Promise of a connected client
    this._registered = false;
    this._holding = null;
    this._durable = { stamp: -Infinity, patterns: [], sharded: false }; // what tempestd stored for publishers
  }

  /** Register handler(context, ...args) for `action`; its value, unless null/undefined, is the answer. */
  on(action, handler) {
    this.handlers.set(action, handler);
    return this;
  }

  /** Ask run() to return once the job in hand is finished. */
  stop() { this.stopping = true; }

  _client() {
    if (this.redisUrl.startsWith('redis+sentinel://')) return this._sentinelClient();
    if (this.onCluster) {
      const client = new ClusterClient(clusterTarget(this.redisUrl));
      warnOfErrors(client);
      return client;
    }
    const target = redisTarget(this.redisUrl);
    const client = createClient({
      url: target.url,
      disableOfflineQueue: true,
      socket: { connectTimeout: 5000, reconnectStrategy: backoff, ...target.socket },
    });
    warnOfErrors(client);
    client.connect().catch(() => {});
    return client;
  }

  /** A client of the master the Sentinels name: connected once they answered, and after a lost
   * connection (a failover: the Sentinel closes the old master's clients) they are asked again
   * and every client's next connection goes to the master they name then. */
  _sentinelClient() {
    if (!this._sentinel) {
      this._sentinel = { target: sentinelTarget(this.redisUrl), sockets: new Set(), asking: null };
      this._sentinel.ready = this._askSentinels();
    }
    const sentinel = this._sentinel;
    const socket = { ...sentinel.target.masterSocket, host: '127.0.0.1', port: 0, ...sentinel.master, connectTimeout: 5000,
      reconnectStrategy: (retries) => { this._askSentinels(); return backoff(retries); } };
    sentinel.sockets.add(socket);
    const client = createClient({ socket, disableOfflineQueue: true, database: sentinel.target.database,
      username: sentinel.target.username, password: sentinel.target.password });
    warnOfErrors(client);
    client.on('end', () => sentinel.sockets.delete(socket));
    // a reconnection can reach the old master before the Sentinels name the new one: it is a
    // replica now, and says READONLY; then ask again and connect to the one they name
    const send = client.sendCommand.bind(client);
    let moving = null;
    client.sendCommand = async (...args) => {
      try {
        return await send(...args);
      } catch (error) {
        if (/^READONLY/.test(String(error.message || '')) && !moving) {
          moving = this._askSentinels()
            .then(() => client.disconnect())
            .then(() => { sentinel.sockets.add(socket); return client.connect(); })
            .catch(() => {})
            .finally(() => { moving = null; });
        }
        throw error;
      }
    };
    sentinel.ready.then(() => client.connect()).catch(() => {});
    return client;
  }

  /** Ask the Sentinels where the master is (once at a time, again until one answers), and
   * point every client's socket there. */
  _askSentinels() {
    const sentinel = this._sentinel;
    if (sentinel.asking) return sentinel.asking;
    sentinel.asking = (async () => {
      for (let retries = 0; ; retries += 1) {
        try {
          const master = await askSentinels(sentinel.target);
          sentinel.master = master;
          for (const socket of sentinel.sockets) Object.assign(socket, master);
          return master;
        } catch (error) {
          if (this.stopping) throw error;
          log.warn(`${error.message}; asking again in ${backoff(retries)} ms`);
          await sleep(backoff(retries));
        }
      }
    })().finally(() => { sentinel.asking = null; });
    return sentinel.asking;
  }

  _blockingClient() {
    if (this._blocking === null) this._blocking = this._client();
    return this._blocking;
  }

  /** A blocking command on the blocking connection, given up (and the connection with it) if it hangs. */
  async _block(command, seconds) {
    const client = this._blockingClient();
    try {
      return await withTimeout(client.sendCommand(command), seconds * 1000 + COMMAND_GRACE, command[0]);
    } catch (error) {
      if (error.hung && this._blocking === client) { // a dead connection: a new one
        this._blocking = null;
        client.disconnect().catch(() => {});
      }
      throw error;
    }
  }

  /** Take and run jobs until stop() or SIGTERM/SIGINT; the job in hand is finished first. */
  async run({ installSignals = true } = {}) {
    const stop = () => this.stop();
    if (installSignals) {
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    }
    const mode = this.reliable ? `reliable, id ${this.workerId}` : 'not reliable';
    log.info(`worker on ${this.queues.join(',')} (${redacted(this.redisUrl)}, ${mode}): ${[...this.handlers.keys()].join(', ')}`);
    let heart = null;
    if (this.reliable) {
      heart = setInterval(() => {
        if (this._registered) this._beat().catch((error) => log.debug(`heartbeat failed: ${error.message}`));
      }, (this.heartbeat * 1000) / 3);
    }
    try {
      const until = Date.now() + 2000; // first connections (the handlers' too), before the loop warns about it
      const ready = () => this._blockingClient().isReady && this.redis.isReady;
      while (!this.stopping && !ready() && Date.now() < until) await sleep(10);
      await this._loop();
    } finally {
      if (heart) clearInterval(heart);
      if (this.reliable) await this._unregister();
      await this.close();
      if (installSignals) {
        process.removeListener('SIGTERM', stop);
        process.removeListener('SIGINT', stop);
      }
    }
    const expired = this.expired ? ` (${this.expired} dropped past their deadline)` : '';
    log.info(`worker stopped after ${this.processed} jobs${expired}`);
  }

  async _loop() {
    let delay = RECONNECT_MIN;
    while (!this.stopping) {
      let jobs;
      try {
        if (this.reliable && !this._registered) {
          await this._beat();
          this._registered = true;
        }
        jobs = this.reliable ? await this._takeReliable() : await this._take();
        delay = RECONNECT_MIN;
      } catch (error) { // a lost connection (a plain Error), or an error reply (node-redis' ErrorReply)
        if (error instanceof ErrorReply && !PASSING_ERRORS.test(error.message)) { // WRONGTYPE, NOPERM: an operator must act
          log.error(`Redis refused to give jobs: ${error.message}; retrying in ${(RECONNECT_MAX / 1000).toFixed(1)}s`);
          await this._sleep(RECONNECT_MAX);
          continue;
        }
        log.warn(`Redis unreachable (${error.message || error}); retrying in ${(delay / 1000).toFixed(1)}s`);
        await this._sleep(delay);
        delay = Math.min(delay * 2, RECONNECT_MAX);
        continue;
      }
      for (const raw of jobs) {
        try {
          await this.process(raw);
        } catch (error) { // process() catches everything; never a dead worker anyway
          log.error(`job failed: ${(error && error.stack) || error}`);
        }
      }
      if (this._holding !== null) await this._release();
    }
  }

  /**
   * BLPOP over the queues, then their low-priority lists: a low job only when every queue is
   * empty. On a Redis Cluster, where one BLPOP cannot name lists of several slots, the lists in
   * that order without blocking (LPOP), then a short BLPOP on the first queue.
   */
  async _take() {
    const lists = [...this.queues, ...this.queues.map(keys.low)];
    if (!this.onCluster || new Set(lists.map(keySlot)).size === 1) {
      const item = await this._block(['BLPOP', ...lists, String(POLL_TIMEOUT)], POLL_TIMEOUT);
      return item ? [item[1]] : [];
    }
    for (const list of lists) {
      const job = await this._block(['LPOP', list], 0);
      if (job !== null && job !== undefined) return [job];
    }
    const item = await this._block(['BLPOP', this.queues[0], String(CLUSTER_POLL)], CLUSTER_POLL);
    return item ? [item[1]] : [];
  }

  // reliable delivery: exactly tempest/reliable.py's commands

  async _beat() {
    const entries = this.queues.map((queue) => `${queue} ${this.workerId}`);
    await Promise.all([
      this.redis.sendCommand(['SET', keys.alive(this.workerId), '1', 'PX', String(Math.trunc(this.heartbeat * 1000))]),
      this.redis.sendCommand(['SADD', WORKERS, ...entries]),
    ]);
  }

  async _takeReliable() {
    for (const queue of this.queues) {
      const jobs = await this._block(['EVAL', TAKE, '2', queue, keys.processing(queue, this.workerId), '1'], 0);
      if (jobs && jobs.length) {
        this._holding = queue;
        return jobs;
      }
    }
    // every queue is empty: a low-priority job, into the processing list of its queue
    for (const queue of this.queues) {
      const job = await this._block(['LMOVE', keys.low(queue), keys.processing(queue, this.workerId), 'LEFT', 'RIGHT'], 0);
      if (job !== null && job !== undefined) {
        this._holding = queue;
        return [job];
      }
    }
    // block on the first queue alone: a low job pushed meanwhile waits at most this timeout
    const queue = this.queues[0];
    const timeout = this.queues.length === 1 ? POLL_TIMEOUT : 0.1;
    const job = await this._block(['BLMOVE', queue, keys.processing(queue, this.workerId), 'LEFT', 'RIGHT', String(timeout)], timeout);
    if (job === null || job === undefined) return [];
    this._holding = queue;
    return [job];
  }

  async _release() {
    const queue = this._holding;
    this._holding = null;
    try {
      await this._block(['DEL', keys.processing(queue, this.workerId)], 0);
    } catch (error) {
      log.warn(`cannot release the finished jobs of ${queue} (${error.message}): they may be delivered again`);
    }
  }

  async _unregister() {
    try {
      const client = this._blockingClient();
      const until = Date.now() + 2000;
      while (!client.isReady && Date.now() < until) await sleep(10);
      const commands = this.queues.map((queue) => client.sendCommand(['EVAL', GIVE_BACK_ALL, '2', keys.processing(queue, this.workerId), queue]));
      commands.push(client.sendCommand(['SREM', WORKERS, ...this.queues.map((queue) => `${queue} ${this.workerId}`)]));
      commands.push(client.sendCommand(['DEL', keys.alive(this.workerId)]));
      await Promise.all(commands);
    } catch (error) {
      log.warn(`cannot unregister from Redis (${error.message}): tempestd will give back what is left`);
    }
  }

  async _sleep(ms) {
    const end = Date.now() + ms;
    while (!this.stopping && Date.now() < end) await sleep(Math.min(100, end - Date.now()));
  }

  /** Run the handler of one raw job; a malformed job is logged and dropped, a failure answered 500. */
  async process(raw) {
    let action, args, respondTo, jobId;
    try {
      [action, args, respondTo, jobId] = decodeJob(raw);
    } catch (error) {
      log.error(`dropped malformed job ${JSON.stringify(String(raw).slice(0, 200))}: ${error.message}`);
      return;
    }
    const env = action === 'url' && args.length && isObject(args[0]) ? args[0] : null;
    if (env && typeof env.deadline === 'number' && Date.now() / 1000 > env.deadline) {
      this._expire(jobId, Date.now() / 1000 - env.deadline);
      return;
    }
    this.processed += 1;
    const handler = this.handlers.get(action);
    const context = new Context(this, action, respondTo, jobId, env);
    if (!handler) {
      log.error(`no handler for action ${JSON.stringify(action)} (job ${jobId})`);
      await this._answerError(context, 501, 'Not Implemented');
      return;
    }
    try {
      const result = await handler(context, ...args);
      if (result !== undefined && result !== null) await context.answer(result);
    } catch (error) {
      log.error(`handler of ${JSON.stringify(action)} failed on job ${jobId}: ${(error && error.stack) || error}`);
      if (context.openStream) await context.openStream.abort(); // its head is gone: the body is cut
      await this._answerError(context, 500, 'Internal Server Error');
    }
  }

  /** A job past its deadline: nobody waits for its answer any more; dropped, counted, logged now and then. */
  _expire(jobId, late) {
    this.expired += 1;
    const message = `dropped job ${jobId} taken ${late.toFixed(3)}s past its deadline (${this.expired} dropped so far)`;
    if (Date.now() - this._expiredLogged >= EXPIRED_LOG_EVERY) {
      this._expiredLogged = Date.now();
      log.info(message);
    } else {
      log.debug(message);
    }
  }

  async _answerError(context, status, reason) {
    if (context.action === 'ws' || context.answered) return;
    if (!this.handlers.has(context.action)) context.action = 'url';
    await context.answer([status, { 'Content-Type': 'text/plain' }, `${status} ${reason}\n`]);
  }

  /** Send `<action> <job_id> <json>` to respond_to; false without one (or if it failed). */
  async sendAnswer(respondTo, action, jobId, data) {
    return this.sendCommand(respondTo, [action, jobId, encode(data)]);
  }

  /** Send one command to the answer endpoint respond_to; false without one or on failure (logged). */
  async sendCommand(respondTo, command) {
    if (!respondTo) return false;
    let client;
    try {
      client = await this._endpoint(respondTo);
      const args = command.map((arg) => (Buffer.isBuffer(arg) ? arg : String(arg)));
      await withTimeout(client.sendCommand(args), ANSWER_TIMEOUT, command[0]);
      return true;
    } catch (error) {
      log.warn(`cannot send ${command[0]} ${command[1]} to ${respondTo}: ${error.message || error}`);
      if (client && (error.hung || !client.isReady)) this._dropEndpoint(respondTo);
      return false;
    }
  }

  _endpoint(respondTo) {
    const known = this._endpoints.get(respondTo);
    if (known) {
      return known.then((client) => {
        if (client.isReady) return client;
        this._dropEndpoint(respondTo);
        return this._endpoint(respondTo);
      });
    }
    const colon = respondTo.lastIndexOf(':');
    const host = respondTo.slice(0, colon).replace(/^\[|\]$/g, '');
    const port = Number(respondTo.slice(colon + 1));
    const client = createClient({
      socket: { host, port, connectTimeout: 5000, reconnectStrategy: false },
      password: this.answerPassword || undefined,
    });
    client.on('error', (error) => log.debug(`answer endpoint ${respondTo}: ${error.message}`));
    const declared = [...this.handlers.keys()].filter((action) => !ANSWER_ACTIONS.includes(action)).sort();
    const ready = withTimeout(client.connect(), ANSWER_TIMEOUT, 'connect').then(async () => {
      if (declared.length) { // answers of these actions are answers there; the reply is ignored
        await withTimeout(client.sendCommand(['ACTIONS', ...declared]), ANSWER_TIMEOUT, 'ACTIONS').catch(() => {});
      }
      return client;
    });
    ready.catch(() => {
      this._dropEndpoint(respondTo, ready);
      client.disconnect().catch(() => {});
    });
    this._endpoints.set(respondTo, ready);
    return ready;
  }

  _dropEndpoint(respondTo, which) {
    const known = this._endpoints.get(respondTo);
    if (!known || (which && known !== which)) return;
    this._endpoints.delete(respondTo);
    known.then((client) => client.disconnect().catch(() => {}), () => {});
  }

  /** RPUSH an encoded job to `queue`. */
  async push(queue, job) {
    await this.redis.sendCommand(['RPUSH', queue, job]);
  }

  /** The fan-out of Context.gather (docs/protocol.md, "Fan-out and gather"). */
  async gather(respondTo, parts, timeout) {
    const gid = randomId(16);
    const key = keys.gather(gid);
    const results = parts.map(() => null);
    const missing = new Set(parts.map((_, index) => index));
    try {
      await this.redis.sendCommand(['XADD', key, '*', 'part', '-1']);
      await Promise.all([
        this.redis.sendCommand(['EXPIRE', key, String(GATHER_TTL)]),
        ...parts.map(([queue, action, args], index) =>
          this.redis.sendCommand(['RPUSH', queue, JSON.stringify([action, args || [], respondTo, `gather:${gid}:${index}`])])),
      ]);
      const deadline = Date.now() + timeout * 1000;
      let last = '0-0';
      while (missing.size && deadline - Date.now() > 0) {
        const block = Math.max(1, Math.trunc(Math.min(deadline - Date.now(), POLL_TIMEOUT * 1000)));
        const reply = await this._block(['XREAD', 'BLOCK', String(block), 'STREAMS', key, last], block / 1000);
        for (const [id, flat] of reply ? reply[0][1] : []) {
          last = id;
          const fields = {};
          for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]] = flat[i + 1];
          const part = /^\d+$/.test(fields.part || '') ? Number(fields.part) : -1;
          if (!missing.has(part)) continue;
          try {
            results[part] = JSON.parse(fields.answer);
          } catch (error) {
            log.warn(`gather: part ${part} answered with something that is not JSON`);
          }
          missing.delete(part);
        }
      }
    } finally {
      await this.redis.sendCommand(['DEL', key]).catch(() => {});
    }
    if (missing.size) log.info(`gather ${gid}: ${missing.size} of ${parts.length} parts missing after ${timeout}s`);
    return results;
  }

  /**
   * Publish `data` (any JSON value; a string as is) to `channel`, as an SSE event named `event`.
   * Resolves to the stream id on a durable channel, else the number of Redis subscribers.
   */
  async publish(channel, data, event = null) {
    if (event !== null && event !== undefined && (typeof event !== 'string' || /[\r\n\0]/.test(event))) {
      throw new Error(`bad event name ${JSON.stringify(event)}`);
    }
    const message = JSON.stringify(event !== null && event !== undefined ? [event, data] : [data]);
    const { patterns, sharded } = await this._publishConfig();
    let history = null;
    for (const [pattern, kept] of patterns) {
      if (fnmatch(pattern).test(channel)) { history = kept; break; }
    }
    if (history === null) return this.redis.sendCommand([sharded ? 'SPUBLISH' : 'PUBLISH', channel, message]);
    const script = sharded ? SPUBLISH_DURABLE : PUBLISH_DURABLE;
    return this.redis.sendCommand(['EVAL', script, '1', keys.stream(channel), message, String(history), channel]);
  }

  /** The durable patterns and the sharded flag, read from Redis at most every DURABLE_CACHE ms. */
  async _publishConfig() {
    if (Date.now() - this._durable.stamp > DURABLE_CACHE) {
      // two GETs, not one MGET: on a cluster the keys are in two slots
      const raw = await this.redis.sendCommand(['GET', DURABLE_CONFIG]);
      const sharded = String(await this.redis.sendCommand(['GET', SHARDED_CONFIG])) === '1';
      this._durable = { stamp: Date.now(), patterns: raw ? JSON.parse(raw) : [], sharded };
    }
    return this._durable;
  }

  /** Close every connection (run() does it when it returns). */
  async close() {
    const clients = [this.redis, this._blocking];
    for (const ready of this._endpoints.values()) clients.push(await ready.catch(() => null));
    this._endpoints.clear();
    this._blocking = null;
    await Promise.all(clients.filter(Boolean).map((client) => client.disconnect().catch(() => {})));
  }
}

module.exports = { Worker, Context, Stream, Session, BodyGone, bodyChunks, decodeJob, withHeader, fnmatch, keys, keySlot,
  DEFAULT_REDIS_URL };
