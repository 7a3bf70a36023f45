'use strict';
/**
 * Redis Cluster for tempest-worker (docs/protocol.md, section 7): a client of the whole cluster
 * with the interface the worker uses of a node-redis client (sendCommand(args, options),
 * isReady, disconnect(), 'error' events), on node-redis' createCluster, which sends each command
 * to the master of its key's slot and follows MOVED and ASK (at most 5 redirections). After a
 * connection to a node failed (a command's, or an idle one's), the map of slots is read again
 * (from the seeds) before the next command: a failed-over master's replica serves its slots then. The slot of a key (keySlot)
 * tells a worker whether its queues share one slot (one BLPOP) or not.
 */

const { EventEmitter } = require('events');
const { createCluster, ErrorReply } = require('redis');

const SLOTS = 16384;
const MAX_REDIRECTIONS = 5;
// commands whose routing key is not their first argument
const SCRIPTS = new Set(['EVAL', 'EVALSHA', 'EVAL_RO', 'EVALSHA_RO', 'FCALL', 'FCALL_RO']);
const KEYLESS = new Set(['PING', 'ECHO', 'INFO', 'TIME', 'ROLE', 'CLIENT', 'CLUSTER', 'COMMAND', 'CONFIG', 'AUTH',
  'HELLO', 'SELECT', 'SCRIPT', 'FUNCTION', 'DBSIZE', 'KEYS', 'SCAN', 'RANDOMKEY', 'WAIT', 'ACL', 'MEMORY',
  'SLOWLOG', 'LATENCY', 'LASTSAVE', 'MULTI', 'EXEC', 'DISCARD', 'READONLY', 'READWRITE', 'ASKING', 'QUIT']);

/** CRC16-CCITT (XMODEM) of `key` (a string or Buffer), or of its hash tag, modulo 16,384. */
function keySlot(key) {
  let bytes = Buffer.isBuffer(key) ? key : Buffer.from(String(key), 'utf8');
  const open = bytes.indexOf('{');
  if (open >= 0) {
    const close = bytes.indexOf('}', open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close); // "{}" hashes the whole key
  }
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % SLOTS;
}

/** The key a command is routed by: undefined for a command without keys (any node). PUBLISH
 * is routed by its channel (any node relays it to every node); SPUBLISH must be: only the
 * master of the channel's slot takes it. */
function commandKey(args) {
  const name = String(args[0]).toUpperCase();
  if (SCRIPTS.has(name)) return Number(args[2]) > 0 ? args[3] : undefined;
  if (name === 'XREAD' || name === 'XREADGROUP') {
    const at = args.findIndex((arg) => String(arg).toUpperCase() === 'STREAMS');
    return at > 0 ? args[at + 1] : undefined;
  }
  return KEYLESS.has(name) || args.length < 2 ? undefined : args[1];
}

/** A connection that failed, or a cluster without the slot's master: read the map again. */
const stale = (error) => !(error instanceof ErrorReply) || /^CLUSTERDOWN/.test(error.message || '');

class ClusterClient extends EventEmitter {
  /**
   * @param {{seeds: {host: string, port: number}[], username?: string, password?: string, socket?: object}} target
   *   the seed nodes, the credentials of every node, and socket options (TLS) for every node
   */
  constructor(target) {
    super();
    this.target = target;
    this.isCluster = true;
    this._cluster = null; // connected, its map read
    this._connecting = null;
    this._closed = false;
    this._connect().catch(() => {}); // at once, as a client's connect(); a failure is retried by the next command
    // node-redis' command methods of the cluster (hGet, rPush, multi...), for handlers: the
    // connected cluster's own, or, before it is connected, the same that wait for it
    return new Proxy(this, {
      get(self, name, receiver) {
        if (name in self || typeof self._methods[name] !== 'function') return Reflect.get(self, name, receiver);
        if (self._cluster) return self._cluster[name].bind(self._cluster);
        return async (...args) => {
          const cluster = await self._connect();
          return cluster[name](...args);
        };
      },
    });
  }

  get isReady() { return this._cluster !== null; }

  /** The connected cluster: its map of slots read from the first seed that answers. */
  _connect() {
    if (this._cluster) return Promise.resolve(this._cluster);
    if (this._closed) return Promise.reject(new Error('the cluster client is closed'));
    if (this._connecting) return this._connecting;
    const { seeds, username, password, socket } = this.target;
    const cluster = createCluster({
      rootNodes: seeds.map((seed) => ({ socket: { ...seed } })),
      defaults: { username, password, disableOfflineQueue: true,
        socket: { connectTimeout: 5000, ...socket, reconnectStrategy: false } },
      maxCommandRedirections: MAX_REDIRECTIONS,
      minimizeConnections: true, // a node's connection when a command needs it: a dead master does not stop the others
    });
    cluster.on('error', (error) => { // a node's connection failed (or its socket): the map is read again next
      this._forget(cluster);
      this.emit('error', error);
    });
    this._methods = Object.getPrototypeOf(cluster);
    this._connecting = cluster.connect().then(() => {
      if (this._closed) {
        cluster.disconnect().catch(() => {});
        throw new Error('the cluster client is closed');
      }
      this._cluster = cluster;
      return cluster;
    }, (error) => {
      cluster.disconnect().catch(() => {});
      throw error;
    }).finally(() => { this._connecting = null; });
    return this._connecting;
  }

  /** Forget `cluster` (its connections and map): the next command reads the map again. */
  _forget(cluster) {
    if (this._cluster !== cluster) return;
    this._cluster = null;
    cluster.disconnect().catch(() => {});
  }

  /** One command, sent to the master of its key's slot (commandKey); the raw reply. */
  async sendCommand(args, options) {
    const cluster = await this._connect();
    try {
      return await cluster.sendCommand(commandKey(args), false, args, options);
    } catch (error) {
      if (stale(error)) this._forget(cluster);
      throw error;
    }
  }

  async disconnect() {
    this._closed = true;
    const cluster = this._cluster || await (this._connecting || Promise.resolve(null)).catch(() => null);
    this._cluster = null;
    if (cluster) await cluster.disconnect();
  }
}

module.exports = { ClusterClient, keySlot, commandKey };
