<?php

declare(strict_types=1);

namespace Tempest;

/**
 * What a handler knows about its job, and how it answers.
 *
 * @property-read Session|null $session the request's session (null without [front] session_cookie)
 */
final class Context
{
    public const REGENERATED_HEADER = 'X-Tempest-Session';
    public const DEFAULT_SESSION_TTL = 14 * 24 * 3600;

    public int $answered = 0;
    public ?Stream $openStream = null;  // the last stream begun
    private ?Session $sessionView = null;

    /**
     * @param string $action the job's action (`url` for HTTP requests)
     * @param string|null $respondTo "host:port" of the answer endpoint, or null
     * @param mixed $jobId the job's id, echoed by every answer (a string from tempestd)
     * @param array|null $env a `url` job's env (method, url, headers, body...), null for other actions
     */
    public function __construct(
        public Worker $worker,
        public string $action,
        public ?string $respondTo,
        public mixed $jobId,
        public ?array $env = null,
    ) {
    }

    public function __get(string $name): mixed
    {
        if ($name === 'session') {
            return $this->session();
        }
        throw new \LogicException("no property $name");
    }

    /** The request's session (the `session:<id>` hash), or null when the job has none. */
    public function session(): ?Session
    {
        if ($this->sessionView === null) {
            $info = $this->env['session'] ?? null;
            if (is_array($info) && is_string($info['id'] ?? null) && Session::validId($info['id'])) {
                $this->sessionView = new Session($this->worker, $info['id'],
                    (int) ($info['ttl'] ?? 0) ?: self::DEFAULT_SESSION_TTL);
            }
        }
        return $this->sessionView;
    }

    /**
     * The request body as a generator of strings, wherever it is: spooled by tempestd to a file
     * on this host (`env.body_file`, read in blocks) or to Redis (`env.body_key`, its chunks
     * fetched as they are read), or inline in the job (`body`, `body_base64`).
     *
     * @return \Generator<int, string>
     * @throws BodyGone at once for a spooled file that does not exist; while iterating for a
     *     missing chunk, a body shorter than its token's size or another sha256
     */
    public function body(): \Generator
    {
        $env = $this->env ?? [];
        return Body::chunks($env, is_array($env['body_key'] ?? null) ? $this->worker->redis() : null);
    }

    /**
     * The request body as a read-only stream resource (fread, stream_get_contents,
     * stream_copy_to_stream, hash_update_stream...), over body(): the same checks, BodyGone
     * thrown by the read that meets the problem.
     *
     * @return resource
     * @throws BodyGone at once for a spooled file that does not exist
     */
    public function bodyStream()
    {
        return BodyStream::open($this->body());
    }

    /**
     * Send an answer (any JSON value; for `url` jobs [status, headers, body]); may be called
     * several times. Returns false when there is nobody to answer (no respond_to).
     */
    public function answer(mixed $data): bool
    {
        if ($this->sessionView !== null && $this->sessionView->regenerated && $this->action === 'url') {
            $data = self::withHeader($data, self::REGENERATED_HEADER, $this->sessionView->id);
        }
        $payload = Worker::json($data);
        $this->answered++;
        return $this->worker->sendCommand($this->respondTo, $this->action, $this->jobId, $payload);
    }

    /**
     * Begin a streamed answer: the status and headers now, the body with write(), then close().
     * @param array|object|null $headers {name: value} or a list of [name, value] pairs
     */
    public function stream(int $status = 200, array|object|null $headers = null): Stream
    {
        $head = [$status, $headers ?? new \stdClass()];
        if ($this->sessionView !== null && $this->sessionView->regenerated) {
            $head = self::withHeader($head, self::REGENERATED_HEADER, $this->sessionView->id);
        }
        $payload = Worker::json($head);
        $this->answered++;
        $this->worker->sendCommand($this->respondTo, 'stream', $this->jobId, $payload);
        return $this->openStream = new Stream($this);
    }

    /**
     * Pass the job on: push [action, args, respond_to, job_id] to `queue`; whoever takes it
     * answers the waiting client (or forwards again). The handler then answers nothing itself.
     */
    public function forward(string $queue, string $action, mixed ...$args): void
    {
        $this->answered++;  // someone else answers: no 500 for a handler that returns null
        $this->worker->push($queue, $action, array_values($args), $this->respondTo, $this->jobId);
    }

    /**
     * Fan out: each part [queue, action, [args...]] becomes a job; wait up to `timeout`
     * seconds for their answers, returned in the parts' order (null for a part missing).
     * @param list<array{0: string, 1: string, 2: array}> $parts
     * @return list<mixed>
     */
    public function gather(array $parts, float $timeout = 5.0): array
    {
        if (!$this->respondTo) {
            throw new \LogicException('gather needs a job with respond_to (the answer endpoint relays the parts\' answers)');
        }
        return $this->worker->gather($this->respondTo, $parts, $timeout);
    }

    /** An answer [status, headers, body] with one more header (headers an object or a list of pairs). */
    public static function withHeader(mixed $answer, string $name, string $value): mixed
    {
        if (!is_array($answer) || !$answer || !array_is_list($answer)) {
            return $answer;  // not an answer the front accepts anyway: its 502 says why
        }
        $headers = $answer[1] ?? null;
        if ($headers instanceof \stdClass) {
            $headers = (array) $headers;
            $headers[$name] = $value;
        } elseif (is_array($headers) && $headers && !array_is_list($headers)) {
            $headers[$name] = $value;
        } elseif (is_array($headers)) {
            $headers[] = [$name, $value];
        } elseif ($headers === null) {
            $headers = [$name => $value];
        } else {
            return $answer;
        }
        $answer[1] = $headers;
        return $answer;
    }
}
