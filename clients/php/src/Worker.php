<?php

declare(strict_types=1);

namespace Tempest;

/**
 * Takes jobs from one or more Redis queues and calls the handler of each job's action; the
 * answers go to the job's answer endpoint (`respond_to`, "host:port") over the Redis protocol.
 *
 *     $worker = new Tempest\Worker('tempest');
 *     $worker->on('url', fn (Context $context, array $env) => [200, ['Content-Type' => 'text/plain'], 'Hello']);
 *     $worker->run();
 *
 * Options: `redis_url` (default: TEMPEST_REDIS_URL, else redis://127.0.0.1:6379/0; also rediss://,
 * redis+sentinel:// and redis+cluster://, whose commands go through Tempest\Cluster),
 * `answer_password` (default: TEMPEST_ANSWER_PASSWORD), `reliable` (default true, unless
 * TEMPEST_RELIABLE is 0, false, no or off; an explicit true or false wins over it), `heartbeat`
 * (seconds, 15), `logger` (callable(string $level, string $message)).
 *
 * Jobs are taken from the queues, then from their low-priority lists (`tempest:low:{<queue>}`)
 * once the queues are empty; a url job taken past its env's `deadline` is dropped unrun
 * (counted in `$expired`; `$processed` counts the jobs run).
 */
final class Worker
{
    public const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379/0';
    public const POLL_TIMEOUT = 1;         // seconds a BLPOP blocks, so that a stop is seen within it
    public const SPREAD_TIMEOUT = 0.25;    // seconds a plain worker on queues in several Cluster slots blocks on the first
    public const RECONNECT_MAX = 2.0;      // seconds between reconnection attempts, at most (0.1 s doubling)
    // the error replies of a Redis that will answer again soon, retried as a lost connection is:
    // a cluster failing over or migrating a slot, a replica's sync, a Redis loading its data
    public const PASSING_ERRORS = ['CLUSTERDOWN', 'TRYAGAIN', 'MASTERDOWN', 'LOADING'];
    public const GATHER_TTL = 300;         // seconds a fan-out's results stream lives at most
    public const ANSWER_ACTIONS = ['url', 'ws'];  // the actions every answer endpoint knows
    public const WORKERS_KEY = 'tempest:workers';
    public const DURABLE_KEY = 'tempest:pubsub:durable';
    public const SHARDED_KEY = 'tempest:pubsub:sharded';  // "1": [pubsub] sharded, publish with SPUBLISH
    public const PUBLISH_CACHE = 5.0;      // seconds a publisher trusts what it read of those two keys
    public const EXPIRED_LOG_EVERY = 10.0; // seconds between two info lines about jobs dropped past their deadline
    private const JSON_FLAGS = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION
        | JSON_THROW_ON_ERROR;

    // tempest/reliable.py's scripts, verbatim
    private const TAKE = "
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not job then break end
  out[#out + 1] = job
end
return out
";
    private const GIVE_BACK_ALL = "
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
";
    // tempest/publish.py's script, verbatim
    private const PUBLISH_DURABLE = "
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({'\$durable', id, ARGV[1]}))
return id
";
    // the same with sharded pub/sub: the channel is in its stream's slot
    private const SPUBLISH_DURABLE = "
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1])
redis.call('SPUBLISH', ARGV[3], cjson.encode({'\$durable', id, ARGV[1]}))
return id
";

    /** @var list<string> */
    public array $queues;
    public string $redisUrl;
    public ?string $answerPassword;
    public bool $reliable;
    public float $heartbeat;
    public string $workerId;
    public int $processed = 0;
    public int $expired = 0;             // url jobs taken past their deadline, dropped without running
    public bool $stopping = false;
    public bool $cluster;                // the Redis is a Redis Cluster (a redis+cluster:// URL)

    /** @var array<string, callable> */
    private array $handlers = [];
    private \Redis|Cluster|null $jobs = null;          // BLPOP, RPUSH, gather, reliable delivery, publish
    private \Redis|\RedisCluster|null $redis = null;   // for the handlers: sessions, anything
    private bool $spread;            // queues in several slots of a cluster: no BLPOP names them all
    /** @var array<string, \Redis> */
    private array $endpoints = [];
    private ?int $beater = null;     // pid of the heartbeat process (reliable)
    private bool $registered = false;
    private ?string $holding = null; // reliable: the queue whose processing list holds the job in hand
    private float $expiredLogged = -INF;
    private float $durableStamp = -INF;
    /** @var list<array{0: string, 1: int}> */
    private array $durable = [];
    private bool $sharded = false;   // read with $durable
    /** @var callable */
    private $logger;

    /** @param string|list<string> $queues */
    public function __construct(string|array $queues = 'tempest', array $options = [])
    {
        $this->queues = is_string($queues) ? [$queues] : array_values($queues);
        $this->redisUrl = $options['redis_url'] ?? (getenv('TEMPEST_REDIS_URL') ?: self::DEFAULT_REDIS_URL);
        $this->answerPassword = $options['answer_password'] ?? (getenv('TEMPEST_ANSWER_PASSWORD') ?: null);
        $this->reliable = isset($options['reliable']) ? (bool) $options['reliable'] : self::reliableFromEnv();
        $this->heartbeat = (float) ($options['heartbeat'] ?? 15.0);
        $debug = (bool) getenv('TEMPEST_DEBUG');
        $this->logger = $options['logger'] ?? static function (string $level, string $message) use ($debug): void {
            if ($level === 'debug' && !$debug) {
                return;  // debug lines (one per job dropped past its deadline) with TEMPEST_DEBUG=1 only
            }
            fwrite(STDERR, sprintf("%s %s tempest.worker[%d]: %s\n", date('Y-m-d H:i:s'), strtoupper($level),
                getmypid(), $message));
        };
        $this->workerId = gethostname() . ':' . getmypid() . ':' . bin2hex(random_bytes(3));
        $this->cluster = str_starts_with($this->redisUrl, 'redis+cluster://');
        if ($this->cluster) {
            Cluster::parse($this->redisUrl);  // a bad URL is refused now, not at the first job
        }
        $slots = array_map([Cluster::class, 'slot'], [...$this->queues, ...array_map([self::class, 'low'], $this->queues)]);
        $this->spread = $this->cluster && count(array_unique($slots)) > 1;
        foreach ($this->cluster && $this->reliable ? $this->queues : [] as $queue) {
            // a { in the name (a hash tag of its own) puts the processing list in another slot: every move CROSSSLOT
            if (Cluster::slot($queue) !== Cluster::slot($this->processing($queue))) {
                throw new \InvalidArgumentException("queue '$queue': on a Redis Cluster its processing list "
                    . "tempest:processing:{{$queue}}:<id> is in another slot (the { in its name): rename the queue, "
                    . "or take it with 'reliable' => false");
            }
        }
    }

    /** Reliable delivery unless TEMPEST_RELIABLE says 0, false, no or off (the default when unset). */
    public static function reliableFromEnv(): bool
    {
        return !preg_match('/^\s*(0|false|no|off)\s*$/i', (string) getenv('TEMPEST_RELIABLE'));
    }

    /** Register `handler(Context $context, ...$args)` for `action` (`url`: HTTP requests, args [env]). */
    public function on(string $action, callable $handler): self
    {
        $this->handlers[$action] = $handler;
        return $this;
    }

    public function hasHandler(string $action): bool
    {
        return isset($this->handlers[$action]);
    }

    /** Take and run jobs until stop() or SIGTERM/SIGINT; the job in hand is finished first. */
    public function run(bool $installSignals = true): void
    {
        if ($installSignals) {
            pcntl_async_signals(true);
            $stop = function (): void {
                $this->stopping = true;
            };
            pcntl_signal(SIGTERM, $stop);  // restart_syscalls: a BLPOP in flight is not cut
            pcntl_signal(SIGINT, $stop);
        }
        $this->log('info', sprintf('worker on %s (%s, %s): %s', implode(',', $this->queues), self::redacted($this->redisUrl),
            $this->reliable ? "reliable, id {$this->workerId}" : 'not reliable', implode(', ', array_keys($this->handlers))));
        if ($this->reliable) {
            $this->startBeating();
        }
        try {
            $this->loop();
        } finally {
            if ($this->reliable) {
                $this->stopBeating();  // no beat (which registers) after the unregistering
                $this->unregister();
            }
        }
        $expired = $this->expired ? " ({$this->expired} dropped past their deadline)" : '';
        $this->log('info', "worker stopped after {$this->processed} jobs$expired");
    }

    /** Ask run() to return once the job in hand is finished. */
    public function stop(): void
    {
        $this->stopping = true;
    }

    private function loop(): void
    {
        $delay = 0.1;
        while (!$this->stopping) {
            try {
                if ($this->reliable && !$this->registered) {
                    $this->register();
                }
                $batch = $this->reliable ? $this->takeReliable() : $this->take();
                $delay = 0.1;
            } catch (RedisError $e) {
                if (!self::passing($e->getMessage())) {  // e.g. WRONGTYPE: an operator must act
                    $this->log('error', sprintf('Redis refused to give jobs: %s; retrying in %.1fs', $e->getMessage(),
                        self::RECONNECT_MAX));
                    $this->pause(self::RECONNECT_MAX);
                    continue;
                }
                $this->backOff($e, $delay);
                continue;
            } catch (\RedisException $e) {
                $this->backOff($e, $delay);
                continue;
            }
            foreach ($batch as $raw) {
                $this->process($raw);
            }
            if ($this->holding !== null) {
                $this->release($this->holding);
            }
        }
    }

    /** Redis is away, or will answer again soon: a new connection (on a cluster, the map of
     * slots read again) after the delay, which doubles up to RECONNECT_MAX. */
    private function backOff(\Throwable $e, float &$delay): void
    {
        $this->log('warning', sprintf('Redis unreachable (%s); retrying in %.1fs', $e->getMessage(), $delay));
        $this->jobs = null;
        $this->pause($delay);
        $delay = min($delay * 2, self::RECONNECT_MAX);
    }

    /** An error reply that a moment cures, by its text as command() raises it from getLastError()
     * ("CLUSTERDOWN The cluster is down": Tempest\Cluster keeps the reply that phpredis threw on). */
    public static function passing(string $error): bool
    {
        foreach (self::PASSING_ERRORS as $prefix) {
            if (str_starts_with($error, $prefix)) {
                return true;
            }
        }
        return false;
    }

    /** @return list<string> */
    private function take(): array
    {
        if ($this->spread) {
            return $this->takeSpread();
        }
        $lows = array_map([self::class, 'low'], $this->queues);  // taken only when every queue is empty
        $item = $this->command('BLPOP', ...[...$this->queues, ...$lows, self::POLL_TIMEOUT]);
        return is_array($item) && count($item) === 2 ? [$item[1]] : [];
    }

    /**
     * Queues in several slots of a cluster, where one BLPOP cannot name them all (CROSSSLOT):
     * each queue (LPOP), then each low list, then a short BLPOP on the first queue alone, so
     * that the others are looked at between the waits.
     *
     * @return list<string>
     */
    private function takeSpread(): array
    {
        foreach ([...$this->queues, ...array_map([self::class, 'low'], $this->queues)] as $key) {
            $job = $this->command('LPOP', $key);
            if (is_string($job)) {
                return [$job];
            }
        }
        $item = $this->command('BLPOP', $this->queues[0], self::SPREAD_TIMEOUT);
        return is_array($item) && count($item) === 2 ? [$item[1]] : [];
    }

    // reliable delivery: exactly tempest/reliable.py's commands

    private function processing(string $queue): string
    {
        return 'tempest:processing:{' . $queue . '}:' . $this->workerId;
    }

    /** The list of the queue's low-priority jobs. */
    public static function low(string $queue): string
    {
        return 'tempest:low:{' . $queue . '}';
    }

    private function beat(\Redis|Cluster $redis): void
    {
        $entries = array_map(fn (string $queue): string => "$queue {$this->workerId}", $this->queues);
        $redis->rawCommand('SET', 'tempest:alive:' . $this->workerId, '1', 'PX', (int) ($this->heartbeat * 1000));
        $redis->rawCommand('SADD', self::WORKERS_KEY, ...$entries);
    }

    private function register(): void
    {
        $this->beat($this->jobs());
        $this->registered = true;
    }

    /** The heartbeat runs in a forked process with its own connection: a long handler does not stop it. */
    private function startBeating(): void
    {
        $parent = getmypid();
        $pid = pcntl_fork();
        if ($pid === -1) {
            $this->log('error', 'cannot fork the heartbeat process: beating between jobs only');
            return;
        }
        if ($pid > 0) {
            $this->beater = $pid;
            return;
        }
        pcntl_signal(SIGTERM, SIG_IGN);  // the parent ends it once its last job is done
        pcntl_signal(SIGINT, SIG_IGN);
        $this->jobs = $this->redis = null;
        $this->endpoints = [];
        $redis = null;
        $interval = (int) ($this->heartbeat / 3 * 1e6);
        while (true) {
            usleep($interval);
            if (posix_getppid() !== $parent) {
                break;  // the worker died (SIGKILL): let the heartbeat expire
            }
            try {
                $redis ??= self::client($this->redisUrl, 5.0);
                $this->beat($redis);
            } catch (\RedisException $e) {
                $redis = null;
            }
        }
        exit(0);
    }

    private function stopBeating(): void
    {
        if ($this->beater !== null) {
            posix_kill($this->beater, SIGKILL);
            pcntl_waitpid($this->beater, $status);
            $this->beater = null;
        }
    }

    /** @return list<string> */
    private function takeReliable(): array
    {
        foreach ($this->queues as $queue) {
            $jobs = $this->command('EVAL', self::TAKE, 2, $queue, $this->processing($queue), 1);
            if ($jobs) {
                $this->holding = $queue;
                return array_values($jobs);
            }
        }
        foreach ($this->queues as $queue) {  // every queue is empty: a low job, into its queue's processing list
            $job = $this->command('LMOVE', self::low($queue), $this->processing($queue), 'LEFT', 'RIGHT');
            if (is_string($job)) {
                $this->holding = $queue;
                return [$job];
            }
        }
        // block on the first queue alone: a low job pushed meanwhile waits at most this timeout
        $queue = $this->queues[0];
        $timeout = count($this->queues) === 1 ? self::POLL_TIMEOUT : 0.1;
        $job = $this->command('BLMOVE', $queue, $this->processing($queue), 'LEFT', 'RIGHT', $timeout);
        if (!is_string($job)) {
            return [];
        }
        $this->holding = $queue;
        return [$job];
    }

    private function release(string $queue): void
    {
        $this->holding = null;
        try {
            $this->command('DEL', $this->processing($queue));
        } catch (\RedisException | RedisError $e) {
            $this->jobs = null;
            $this->log('warning', "cannot release the finished jobs of $queue ({$e->getMessage()}): they may be delivered again");
        }
    }

    private function unregister(): void
    {
        try {
            $redis = $this->jobs();
            foreach ($this->queues as $queue) {
                $redis->rawCommand('EVAL', self::GIVE_BACK_ALL, 2, $this->processing($queue), $queue);
            }
            $entries = array_map(fn (string $queue): string => "$queue {$this->workerId}", $this->queues);
            $redis->rawCommand('SREM', self::WORKERS_KEY, ...$entries);
            $redis->rawCommand('DEL', 'tempest:alive:' . $this->workerId);
        } catch (\RedisException $e) {
            $this->log('warning', "cannot unregister from Redis ({$e->getMessage()}): tempestd will give back what is left");
        }
    }

    // jobs

    /** Run the handler of one raw job (the JSON envelope); a malformed job is logged and dropped. */
    public function process(string $raw): void
    {
        $job = json_decode($raw, true, 512, JSON_BIGINT_AS_STRING);
        if (!is_array($job) || !array_is_list($job) || count($job) !== 4 || !is_string($job[0])
            || !is_array($job[1]) || !array_is_list($job[1]) || !($job[2] === null || is_string($job[2]))) {
            $this->log('error', 'dropped malformed job ' . substr($raw, 0, 200));
            return;
        }
        [$action, $args, $respondTo, $jobId] = $job;
        $env = $action === 'url' && isset($args[0]) && is_array($args[0]) ? $args[0] : null;
        $deadline = $env['deadline'] ?? null;
        if ((is_int($deadline) || is_float($deadline)) && microtime(true) > $deadline) {
            $this->expire($jobId, microtime(true) - $deadline);
            return;
        }
        $this->processed++;
        $context = new Context($this, $action, $respondTo, $jobId, $env);
        $handler = $this->handlers[$action] ?? null;
        if ($handler === null) {
            $this->log('error', "no handler for action '$action' (job " . self::text($jobId) . ')');
            $this->answerError($context, 501, 'Not Implemented');
            return;
        }
        try {
            $result = $handler($context, ...$args);
            if ($result !== null) {
                $context->answer($result);
            }
        } catch (\Throwable $e) {
            $this->log('error', "handler of '$action' failed on job " . self::text($jobId) . ": $e");
            if ($e instanceof \RedisException || $e instanceof \RedisClusterException) {
                $this->jobs = $this->redis = null;  // connect again for the next job
            }
            $context->openStream?->abort();  // its head is gone: the client's body is cut
            $this->answerError($context, 500, 'Internal Server Error');
        }
    }

    /** A job past its deadline: nobody waits for its answer any more; dropped, counted, logged now and then. */
    private function expire(mixed $jobId, float $late): void
    {
        $this->expired++;
        $message = sprintf('dropped job %s taken %.3fs past its deadline (%d dropped so far)', self::text($jobId), $late,
            $this->expired);
        $now = microtime(true);
        if ($now - $this->expiredLogged >= self::EXPIRED_LOG_EVERY) {
            $this->expiredLogged = $now;
            $this->log('info', $message);
        } else {
            $this->log('debug', $message);
        }
    }

    private function answerError(Context $context, int $status, string $reason): void
    {
        if ($context->action === 'ws' || $context->answered > 0) {
            return;
        }
        if (!isset($this->handlers[$context->action])) {
            $context->action = 'url';
        }
        try {
            $context->answer([$status, ['Content-Type' => 'text/plain'], "$status $reason\n"]);
        } catch (\Throwable $e) {
            $this->log('error', "cannot answer $status: {$e->getMessage()}");
        }
    }

    /** RPUSH an encoded job to `queue` (never retried: a retried RPUSH may push twice). */
    public function push(string $queue, string $action, array $args, ?string $respondTo, mixed $jobId): void
    {
        $this->command('RPUSH', $queue, self::json([$action, array_values($args), $respondTo, $jobId]));
    }

    /**
     * The fan-out of Context::gather (docs/protocol.md, "Fan-out and gather").
     * @param list<array{0: string, 1: string, 2: array}> $parts
     * @return list<mixed>
     */
    public function gather(string $respondTo, array $parts, float $timeout): array
    {
        $gatherId = self::token(16);
        $key = 'tempest:gather:{' . $gatherId . '}';
        $results = array_fill(0, count($parts), null);
        $missing = array_fill_keys(array_keys($results), true);
        try {
            $this->command('XADD', $key, '*', 'part', '-1');
            $this->command('EXPIRE', $key, self::GATHER_TTL);
            foreach (array_values($parts) as $index => [$queue, $action, $args]) {
                $this->push($queue, $action, $args, $respondTo, "gather:$gatherId:$index");
            }
            $deadline = microtime(true) + $timeout;
            $last = '0-0';
            while ($missing && ($left = $deadline - microtime(true)) > 0) {
                $block = max(1, (int) (min($left, self::POLL_TIMEOUT) * 1000));
                $reply = $this->command('XREAD', 'BLOCK', $block, 'STREAMS', $key, $last);
                foreach (is_array($reply) && $reply ? $reply[0][1] : [] as [$entryId, $flat]) {
                    $last = $entryId;
                    $fields = [];
                    for ($i = 0; $i + 1 < count($flat); $i += 2) {
                        $fields[$flat[$i]] = $flat[$i + 1];
                    }
                    $part = $fields['part'] ?? '';
                    if (!ctype_digit($part) || !isset($missing[(int) $part])) {
                        continue;  // part -1 made the stream
                    }
                    unset($missing[(int) $part]);
                    $value = json_decode($fields['answer'] ?? '', true, 512, JSON_BIGINT_AS_STRING);
                    if (json_last_error() !== JSON_ERROR_NONE) {
                        $this->log('warning', "gather: part $part answered with something that is not JSON");
                        continue;
                    }
                    $results[(int) $part] = $value;
                }
            }
        } finally {
            try {
                $this->command('DEL', $key);
            } catch (\RedisException | RedisError $e) {
                $this->jobs = null;
            }
        }
        if ($missing) {
            $this->log('info', sprintf('gather %s: %d of %d parts missing after %ss', $gatherId, count($missing),
                count($parts), $timeout));
        }
        return $results;
    }

    // answers

    /** Send `<command> <job id> <payload>` to the answer endpoint `respond_to`; false without one. */
    public function sendCommand(?string $respondTo, string $command, mixed $jobId, string ...$rest): bool
    {
        if (!$respondTo) {
            return false;
        }
        $args = [$command, self::text($jobId), ...$rest];
        try {
            $endpoint = $this->endpoint($respondTo);
            $reply = $endpoint->rawCommand(...$args);
            if ($reply === false && str_contains((string) $endpoint->getLastError(), 'unknown command')) {
                // the endpoint forgot our ACTIONS (tempestd restarted, phpredis reconnected): once more
                $this->declareActions($endpoint);
                $endpoint->clearLastError();
                $reply = $endpoint->rawCommand(...$args);
            }
            if ($reply === false) {
                $this->log('warning', "$respondTo refused an answer: " . $endpoint->getLastError());
                $endpoint->clearLastError();
            }
        } catch (\RedisException $e) {
            $this->log('warning', "cannot send an answer to $respondTo: {$e->getMessage()}");
            unset($this->endpoints[$respondTo]);
        }
        return true;
    }

    private function endpoint(string $respondTo): \Redis
    {
        if (!isset($this->endpoints[$respondTo])) {
            $colon = strrpos($respondTo, ':');
            if ($colon === false) {
                throw new \RedisException("bad respond_to '$respondTo'");
            }
            $host = trim(substr($respondTo, 0, $colon), '[]');
            $redis = new \Redis();
            $redis->connect($host, (int) substr($respondTo, $colon + 1), 5.0, null, 0, 10.0);
            if ($this->answerPassword !== null && !$redis->auth($this->answerPassword)) {
                throw new \RedisException("$respondTo refused the password");
            }
            $this->declareActions($redis);
            $this->endpoints[$respondTo] = $redis;
        }
        return $this->endpoints[$respondTo];
    }

    private function declareActions(\Redis $redis): void
    {
        $declared = array_values(array_diff(array_keys($this->handlers), self::ANSWER_ACTIONS));
        sort($declared);
        if ($declared) {
            $redis->rawCommand('ACTIONS', ...$declared);  // its reply is ignored
            $redis->clearLastError();
        }
    }

    // publishing

    /**
     * Publish `data` (any JSON value; a string is sent as is) to the subscribers of `channel`,
     * as an SSE event named `event`. Returns the stream id on a durable channel, else the
     * number of Redis subscribers.
     */
    public function publish(string $channel, mixed $data, ?string $event = null): string|int
    {
        if ($event !== null && preg_match('/[\r\n\0]/', $event)) {
            throw new \InvalidArgumentException('bad event name ' . json_encode($event));
        }
        $message = self::json($event !== null ? [$event, $data] : [$data]);
        $history = $this->durableHistory($channel);
        if ($history === null) {
            // on a cluster: PUBLISH to any node, which passes it to every node; SPUBLISH to the
            // master of the channel's slot (Cluster::keyOf: its argument 1)
            return (int) $this->command($this->sharded ? 'SPUBLISH' : 'PUBLISH', $channel, $message);
        }
        // on a cluster: the master of the stream's slot (the script's one key)
        $script = $this->sharded ? self::SPUBLISH_DURABLE : self::PUBLISH_DURABLE;
        $id = $this->command('EVAL', $script, 1, 'tempest:stream:{' . $channel . '}', $message, $history, $channel);
        if (!is_string($id)) {
            throw new RedisError('durable publish failed: ' . json_encode($id));
        }
        return $id;
    }

    /** The history length of a durable channel, null for a plain one; the durable patterns and
     * the sharded flag read again when older than PUBLISH_CACHE (two GETs: two slots). */
    private function durableHistory(string $channel): ?int
    {
        if (microtime(true) - $this->durableStamp > self::PUBLISH_CACHE) {
            $raw = $this->command('GET', self::DURABLE_KEY);
            $patterns = is_string($raw) ? json_decode($raw, true) : [];
            $this->durable = is_array($patterns) ? $patterns : [];
            $this->sharded = $this->command('GET', self::SHARDED_KEY) === '1';
            $this->durableStamp = microtime(true);
        }
        foreach ($this->durable as [$pattern, $history]) {
            if (fnmatch((string) $pattern, $channel)) {
                return (int) $history;
            }
        }
        return null;
    }

    // Redis

    /**
     * A phpredis client of the worker's Redis, for the handlers (connected again after a
     * failure): a \Redis, or on a cluster a \RedisCluster (its typed methods follow MOVED and
     * ASK; its rawCommand takes a key or a node first, and follows neither).
     */
    public function redis(): \Redis|\RedisCluster
    {
        if ($this->redis === null && $this->cluster) {
            $this->redis = self::phpredisCluster($this->redisUrl, 10.0);
        }
        return $this->redis ??= self::connect($this->redisUrl, 10.0);
    }

    private function jobs(): \Redis|Cluster
    {
        // a BLPOP blocks POLL_TIMEOUT: the read timeout must be above it
        return $this->jobs ??= self::client($this->redisUrl, self::POLL_TIMEOUT + 10.0);
    }

    /** The worker's own client of a URL: a connected \Redis, or a Cluster for redis+cluster://. */
    public static function client(string $url, float $readTimeout): \Redis|Cluster
    {
        if (str_starts_with($url, 'redis+cluster://')) {
            [$seeds, $nodeUrl] = Cluster::parse($url);
            return new Cluster($seeds, $nodeUrl, $readTimeout);
        }
        return self::connect($url, $readTimeout);
    }

    /** phpredis' RedisCluster on a redis+cluster:// URL's seeds, credentials and TLS parameters. */
    public static function phpredisCluster(string $url, float $readTimeout): \RedisCluster
    {
        [$seeds, $nodeUrl] = Cluster::parse($url);
        $parts = parse_url(sprintf($nodeUrl, $seeds[0]));
        parse_str($parts['query'] ?? '', $query);
        $auth = null;
        if (isset($parts['pass'])) {
            $auth = isset($parts['user']) && $parts['user'] !== ''
                ? [urldecode($parts['user']), urldecode($parts['pass'])] : urldecode($parts['pass']);
        }
        if ($parts['scheme'] === 'rediss') {
            $seeds = array_map(fn (string $seed): string => "tls://$seed", $seeds);
            return new \RedisCluster(null, $seeds, 5.0, $readTimeout, false, $auth, self::tlsContext($query));
        }
        return new \RedisCluster(null, $seeds, 5.0, $readTimeout, false, $auth);
    }

    /** One command on the jobs connection; an error reply raises RedisError. */
    private function command(mixed ...$args): mixed
    {
        $redis = $this->jobs();
        $redis->clearLastError();
        $reply = $redis->rawCommand(...$args);
        if ($reply === false && ($error = $redis->getLastError()) !== null) {
            $redis->clearLastError();
            throw new RedisError($error);
        }
        return $reply;
    }

    /** A Redis URL for a log line: its passwords (user info, password=, sentinel_password=,
     * ssl_password=) replaced by ***, as tempestd prints URLs. */
    public static function redacted(string $url): string
    {
        $url = preg_replace('~^([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@~', '$1:***@', $url);
        return preg_replace('~([?&](?:password|sentinel_password|ssl_password)=)[^&\s]*~', '$1***', $url);
    }

    /** PHP's SSL stream context of a rediss:// URL's query parameters, named as tempestd
     * (redis-py) takes them: ssl_ca_certs (a CA file instead of the system's), ssl_certfile and
     * ssl_keyfile (a client certificate), ssl_cert_reqs=none (no verification),
     * ssl_check_hostname=false (the chain verified, not the name). */
    public static function tlsContext(array $query): array
    {
        $context = ['verify_peer' => true, 'verify_peer_name' => true];
        if (isset($query['ssl_ca_certs'])) {
            $context['cafile'] = $query['ssl_ca_certs'];
        }
        if (isset($query['ssl_certfile'])) {
            $context['local_cert'] = $query['ssl_certfile'];
            $context['local_pk'] = $query['ssl_keyfile'] ?? $query['ssl_certfile'];
        }
        if (($query['ssl_cert_reqs'] ?? '') === 'none') {
            $context['verify_peer'] = $context['verify_peer_name'] = false;
        }
        if (in_array(strtolower($query['ssl_check_hostname'] ?? ''), ['false', 'no', '0'], true)) {
            $context['verify_peer_name'] = false;
        }
        return $context;
    }

    /** The redis:// (rediss:// with ssl=yes) URL of the master that the Sentinels of a
     * redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db] URL name, asked
     * in turn; its query may hold sentinel_password (and sentinel_username), sentinel_ssl=yes. */
    public static function sentinelMaster(string $url): string
    {
        if (!preg_match('~^redis\+sentinel://(?:([^@/]*)@)?([^/?]+)/([^/?]+)(?:/(\d+))?/?(?:\?(.*))?$~', $url, $m)) {
            throw new \InvalidArgumentException('expected redis+sentinel://host:port[,host:port...]/service[/db], not '
                . self::redacted($url));
        }
        [$userinfo, $hosts, $service, $db, $queryString] = [$m[1], $m[2], urldecode($m[3]), $m[4] ?? '', $m[5] ?? ''];
        parse_str($queryString, $query);
        $problems = [];
        foreach (explode(',', $hosts) as $address) {
            [$host, $port] = str_contains($address, ':') ? explode(':', $address, 2) : [$address, '26379'];
            try {
                $sentinel = new \Redis();
                $tls = in_array(strtolower($query['sentinel_ssl'] ?? ''), ['yes', 'true', '1'], true);
                if ($tls) {
                    $sentinel->connect('tls://' . $host, (int) $port, 2.0, null, 0, 2.0,
                        ['stream' => self::tlsContext($query)]);
                } else {
                    $sentinel->connect($host, (int) $port, 2.0, null, 0, 2.0);
                }
                if (isset($query['sentinel_password'])) {
                    $sentinel->auth(isset($query['sentinel_username'])
                        ? [$query['sentinel_username'], $query['sentinel_password']] : $query['sentinel_password']);
                }
                $master = $sentinel->rawCommand('SENTINEL', 'get-master-addr-by-name', $service);
                $sentinel->close();
            } catch (\RedisException $e) {
                $problems[] = "$address: " . $e->getMessage();
                continue;
            }
            if (!is_array($master) || count($master) !== 2) {
                $problems[] = "$address: no master for $service";
                continue;
            }
            $ssl = in_array(strtolower($query['ssl'] ?? ''), ['yes', 'true', '1'], true);
            return ($ssl ? 'rediss' : 'redis') . '://' . ($userinfo !== '' ? "$userinfo@" : '')
                . "$master[0]:$master[1]" . ($db !== '' ? "/$db" : '') . ($ssl && $queryString !== '' ? "?$queryString" : '');
        }
        throw new \RedisException("no Sentinel knows the master $service: " . implode('; ', $problems));
    }

    /** A connected phpredis client for a redis://, rediss:// (or unix://) URL: password, user, database. */
    public static function connect(string $url, float $readTimeout): \Redis
    {
        $sentinel = str_starts_with($url, 'redis+sentinel://');
        if ($sentinel) {
            $url = self::sentinelMaster($url);  // asked again at each connection: a failover moves it
        }
        $parts = parse_url($url);
        if ($parts === false || !in_array($parts['scheme'] ?? '', ['redis', 'rediss', 'unix'], true)) {
            throw new \InvalidArgumentException("unsupported Redis URL '" . self::redacted($url) . "'");
        }
        parse_str($parts['query'] ?? '', $query);
        $redis = new \Redis();
        if ($parts['scheme'] === 'unix') {
            $redis->connect($parts['path'], 0, 5.0, null, 0, $readTimeout);
            $db = (int) ($query['db'] ?? 0);
        } else {
            $host = $parts['host'] ?? '127.0.0.1';
            if ($parts['scheme'] === 'rediss') {  // TLS, with tempestd's (redis-py's) query parameters
                $redis->connect('tls://' . $host, $parts['port'] ?? 6379, 5.0, null, 0, $readTimeout,
                    ['stream' => self::tlsContext($query)]);
            } else {
                $redis->connect($host, $parts['port'] ?? 6379, 5.0, null, 0, $readTimeout);
            }
            $db = (int) (trim($parts['path'] ?? '', '/') ?: ($query['db'] ?? 0));
        }
        if (isset($parts['pass'])) {
            $credentials = isset($parts['user']) && $parts['user'] !== ''
                ? [urldecode($parts['user']), urldecode($parts['pass'])] : urldecode($parts['pass']);
            if (!$redis->auth($credentials)) {
                throw new \RedisException('Redis refused the password: ' . $redis->getLastError());
            }
        }
        if ($db !== 0 && !$redis->select($db)) {
            throw new \RedisException("Redis refused SELECT $db");
        }
        if ($sentinel) {  // the Sentinels' answer may be a moment old in a failover: a master, or no connection
            $role = $redis->rawCommand('ROLE');
            if (is_array($role) && ($role[0] ?? 'master') !== 'master') {
                $redis->close();
                throw new \RedisException('the Sentinels named ' . self::redacted($url) . ", which is a $role[0] now");
            }
        }
        return $redis;
    }

    // helpers

    /** Compact JSON as the protocol wants it (UTF-8, no escaped slashes); throws \JsonException. */
    public static function json(mixed $value): string
    {
        return json_encode($value, self::JSON_FLAGS);
    }

    /** A job id as it goes back: a string as received, a number as its decimal text. */
    public static function text(mixed $jobId): string
    {
        return is_string($jobId) ? $jobId : (is_int($jobId) ? (string) $jobId : self::json($jobId));
    }

    /** `bytes` random bytes in URL-safe base64 without padding. */
    public static function token(int $bytes): string
    {
        return rtrim(strtr(base64_encode(random_bytes($bytes)), '+/', '-_'), '=');
    }

    public function log(string $level, string $message): void
    {
        ($this->logger)($level, $message);
    }

    private function pause(float $seconds): void
    {
        $end = microtime(true) + $seconds;
        while (!$this->stopping && ($left = $end - microtime(true)) > 0) {
            usleep((int) (min(0.1, $left) * 1e6));
        }
    }
}
