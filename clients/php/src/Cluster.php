<?php

declare(strict_types=1);

namespace Tempest;

/**
 * A Redis Cluster as the worker's own commands see it (docs/protocol.md, section 7): one
 * phpredis connection per master, each command sent to the master of its key's slot, with
 * `rawCommand(...)` and `getLastError()` as on a \Redis. phpredis' RedisCluster is not used
 * for these: its rawCommand (the only way to send LMOVE and BLMOVE in phpredis 5.3) follows
 * neither MOVED nor ASK. This one does: a MOVED records the slot's new master, an ASK sends
 * ASKING then the command to that node once; at most 5 redirections per command. After a
 * node could not be reached, the slots are read again (CLUSTER SLOTS) before the next command.
 */
final class Cluster
{
    public const SLOTS = 16384;
    public const MAX_REDIRECTIONS = 5;

    /** @var list<array{0: int, 1: int, 2: string}> slot ranges [first, last, "host:port"] */
    private array $ranges = [];
    /** @var array<int, string> slots whose master a MOVED named since the ranges were read */
    private array $moved = [];
    /** @var array<string, \Redis> */
    private array $nodes = [];
    private ?string $lastError = null;

    /**
     * @param list<string> $seeds "host:port" of nodes to ask for the slots
     * @param string $nodeUrl the redis:// or rediss:// URL of any node, `%s` for "host:port"
     *                        (credentials and TLS parameters: Worker::connect reads them)
     */
    public function __construct(private array $seeds, private string $nodeUrl, private float $readTimeout)
    {
    }

    /**
     * The seeds, and the URL of a node, of redis+cluster://[[user]:password@]host:port[,host:port...][/][?ssl=yes&...].
     *
     * @return array{0: list<string>, 1: string}
     */
    public static function parse(string $url): array
    {
        if (!preg_match('~^redis\+cluster://(?:([^@/]*)@)?([^/?]+)(/[^?]*)?(?:\?(.*))?$~', $url, $m)) {
            throw new \InvalidArgumentException('expected redis+cluster://host:port[,host:port...], not '
                . Worker::redacted($url));
        }
        [$userinfo, $hosts, $path, $query] = [$m[1], $m[2], $m[3] ?? '', $m[4] ?? ''];
        if (!in_array($path, ['', '/', '/0'], true)) {
            throw new \InvalidArgumentException('a Redis Cluster has database 0 only: no path after '
                . 'redis+cluster://host:port[,...]');
        }
        parse_str($query, $params);
        $ssl = in_array(strtolower((string) ($params['ssl'] ?? '')), ['yes', 'true', '1'], true);
        $seeds = array_map(fn (string $seed): string => str_contains($seed, ':') ? $seed : "$seed:6379",
            explode(',', $hosts));
        $nodeUrl = ($ssl ? 'rediss' : 'redis') . '://' . ($userinfo !== '' ? str_replace('%', '%%', $userinfo) . '@' : '')
            . '%s' . ($query !== '' ? '?' . str_replace('%', '%%', $query) : '');
        return [$seeds, $nodeUrl];
    }

    /** The slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key, modulo 16384. */
    public static function slot(string $key): int
    {
        $open = strpos($key, '{');
        if ($open !== false && ($close = strpos($key, '}', $open + 1)) !== false && $close > $open + 1) {
            $key = substr($key, $open + 1, $close - $open - 1);
        }
        $crc = 0;
        for ($i = 0, $n = strlen($key); $i < $n; $i++) {
            $crc ^= ord($key[$i]) << 8;
            for ($bit = 0; $bit < 8; $bit++) {
                $crc = ($crc & 0x8000) ? (($crc << 1) ^ 0x1021) & 0xFFFF : ($crc << 1) & 0xFFFF;
            }
        }
        return $crc % self::SLOTS;
    }

    /** The key a command is routed by (null: any node will do). */
    public static function keyOf(string $command, array $args): ?string
    {
        switch (strtoupper($command)) {
            case 'EVAL':
            case 'EVALSHA':
                return ($args[1] ?? 0) > 0 ? (string) $args[2] : null;
            case 'XREAD':
                $streams = array_search('STREAMS', array_map('strtoupper', array_map('strval', $args)), true);
                return $streams === false ? null : (string) $args[$streams + 1];
            case 'PUBLISH':  // the cluster passes every message to every node (SPUBLISH: by its channel, below)
            case 'PING':
                return null;
            default:
                return isset($args[0]) ? (string) $args[0] : null;
        }
    }

    /** Send one command to its key's master; an error reply is false, with getLastError(). */
    public function rawCommand(string $command, mixed ...$args): mixed
    {
        $this->lastError = null;
        $key = self::keyOf($command, $args);
        $address = $key === null ? null : $this->master(self::slot($key));
        $asking = false;
        for ($redirections = 0; ; $redirections++) {
            $address ??= $this->master(0);
            $redis = null;
            try {
                $redis = $this->node($address);
                if ($asking) {
                    $redis->rawCommand('ASKING');
                }
                $redis->clearLastError();
                $reply = $redis->rawCommand($command, ...$args);
                $error = $reply === false ? $redis->getLastError() : null;
            } catch (\RedisException $e) {
                // phpredis throws on an error reply other than ERR (MOVED, ASK, CROSSSLOT,
                // CLUSTERDOWN...), the connection intact: its getLastError() tells
                $error = $redis?->getLastError();
                if ($error === null) {
                    $this->forget();  // the node could not be reached: the slots are read again
                    throw $e;
                }
            }
            if ($error === null) {
                return $reply;
            }
            $redis->clearLastError();
            if (!preg_match('/^(MOVED|ASK) (\d+) (\S+)$/', $error, $m) || $redirections >= self::MAX_REDIRECTIONS) {
                $this->lastError = $error;
                return false;
            }
            $address = $m[3];
            $asking = $m[1] === 'ASK';
            if (!$asking) {
                $this->moved[(int) $m[2]] = $address;
            }
        }
    }

    public function getLastError(): ?string
    {
        return $this->lastError;
    }

    public function clearLastError(): bool
    {
        $this->lastError = null;
        return true;
    }

    public function close(): void
    {
        foreach ($this->nodes as $redis) {
            try {
                $redis->close();
            } catch (\RedisException $e) {
                // gone already
            }
        }
        $this->nodes = [];
    }

    private function master(int $slot): string
    {
        if (isset($this->moved[$slot])) {
            return $this->moved[$slot];
        }
        if (!$this->ranges) {
            $this->readSlots();
        }
        foreach ($this->ranges as [$first, $last, $address]) {
            if ($first <= $slot && $slot <= $last) {
                return $address;
            }
        }
        throw new \RedisException("no master of the Redis Cluster serves slot $slot (CLUSTER SLOTS)");
    }

    /** CLUSTER SLOTS from the seeds and the nodes known, in turn: the first that answers. */
    private function readSlots(): void
    {
        $problems = [];
        $known = array_map(fn (array $range): string => $range[2], $this->ranges);
        foreach (array_unique([...$this->seeds, ...$known]) as $address) {
            try {
                $slots = $this->node($address)->rawCommand('CLUSTER', 'SLOTS');
            } catch (\RedisException $e) {
                unset($this->nodes[$address]);
                $problems[] = "$address: {$e->getMessage()}";
                continue;
            }
            if (!is_array($slots) || !$slots) {
                $problems[] = "$address: no slots (" . ($this->nodes[$address]->getLastError() ?? 'not a cluster node?') . ')';
                continue;
            }
            $this->ranges = [];
            foreach ($slots as $range) {
                $host = $range[2][0] === '' ? explode(':', $address)[0] : $range[2][0];
                $this->ranges[] = [(int) $range[0], (int) $range[1], "$host:{$range[2][1]}"];
            }
            $this->moved = [];
            return;
        }
        throw new \RedisException('no node of the Redis Cluster told its slots: ' . implode('; ', $problems));
    }

    private function node(string $address): \Redis
    {
        return $this->nodes[$address] ??= Worker::connect(sprintf($this->nodeUrl, $address), $this->readTimeout);
    }

    private function forget(): void
    {
        $this->close();
        $this->seeds = array_values(array_unique([...$this->seeds,
            ...array_map(fn (array $range): string => $range[2], $this->ranges)]));
        $this->ranges = $this->moved = [];
    }
}
