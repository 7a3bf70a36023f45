<?php

declare(strict_types=1);

namespace Tempest;

/**
 * A session as a worker sees it: the Redis hash `session:<id>`, each field's value the JSON
 * list [value] (the 2012 format). Reads go to Redis every time; each write sets the hash's
 * TTL again. Also an array: `$session['user'] = 'bob'`, `$session['user']`, `unset(...)`.
 */
final class Session implements \ArrayAccess
{
    public bool $regenerated = false;

    public function __construct(private Worker $worker, public string $id, public int $ttl)
    {
    }

    public static function validId(string $id): bool
    {
        return preg_match('/\A[A-Za-z0-9_-]{22}\z/', $id) === 1;
    }

    public function key(): string
    {
        return 'session:' . $this->id;
    }

    public function get(string $field, mixed $default = null): mixed
    {
        $raw = $this->worker->redis()->hGet($this->key(), $field);
        return is_string($raw) ? self::value($raw, $default) : $default;
    }

    public function set(string $field, mixed $value): void
    {
        $this->update([$field => $value]);
    }

    /** Write several fields and the TTL in one transaction. */
    public function update(array $values): void
    {
        if (!$values) {
            return;
        }
        $encoded = [];
        foreach ($values as $field => $value) {
            $encoded[(string) $field] = Worker::json([$value]);
        }
        $result = $this->worker->redis()->multi()->hMSet($this->key(), $encoded)->expire($this->key(), $this->ttl)->exec();
        if (!is_array($result)) {
            throw new RedisError('session write failed');
        }
    }

    public function delete(string $field): void
    {
        $this->worker->redis()->hDel($this->key(), $field);
    }

    public function has(string $field): bool
    {
        return (bool) $this->worker->redis()->hExists($this->key(), $field);
    }

    /** Every field, as an array. */
    public function all(): array
    {
        $all = [];
        foreach ($this->worker->redis()->hGetAll($this->key()) ?: [] as $field => $raw) {
            $all[$field] = self::value($raw, null);
        }
        return $all;
    }

    /** Forget every field (logout); the id stays, regenerate() it too. */
    public function clear(): void
    {
        $this->worker->redis()->del($this->key());
    }

    /** A new id keeping the fields (at login): the old id stops working. Returns the new id. */
    public function regenerate(): string
    {
        $old = $this->key();
        $this->id = Worker::token(16);
        $this->worker->redis()->rename($old, $this->key());  // false when nothing was written yet
        $this->regenerated = true;
        return $this->id;
    }

    public function offsetExists(mixed $offset): bool
    {
        return $this->has((string) $offset);
    }

    public function offsetGet(mixed $offset): mixed
    {
        return $this->get((string) $offset);
    }

    public function offsetSet(mixed $offset, mixed $value): void
    {
        $this->set((string) $offset, $value);
    }

    public function offsetUnset(mixed $offset): void
    {
        $this->delete((string) $offset);
    }

    private static function value(string $raw, mixed $default): mixed
    {
        $value = json_decode($raw, true, 512, JSON_BIGINT_AS_STRING);
        return is_array($value) && array_is_list($value) && $value ? $value[0] : $default;
    }
}
