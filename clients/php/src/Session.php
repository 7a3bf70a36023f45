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

    /** Forget every field and every grant (logout); the id stays, regenerate() it too. One DEL per key:
     * on a cluster the two keys are in two slots. */
    public function clear(): void
    {
        $redis = $this->worker->redis();
        $redis->del($this->key());
        $redis->del(self::grants($this->id));
    }

    /** A new id keeping the fields and grants (at login): the old id stops working. Returns the new id.
     * Two RENAMEs in one transaction; on a cluster, where RENAME cannot cross slots, a copy, then
     * the old keys deleted (docs/protocol.md, section 7). */
    public function regenerate(): string
    {
        $old = $this->id;
        $this->id = Worker::token(16);
        $redis = $this->worker->redis();
        if ($redis instanceof \RedisCluster) {
            $this->copy($redis, $old);
        } else {  // each RENAME is false when nothing was written yet
            $redis->multi()->rename("session:$old", $this->key())->rename(self::grants($old), self::grants($this->id))->exec();
        }
        $this->regenerated = true;
        return $this->id;
    }

    public static function grants(string $id): string
    {
        return 'tempest:grants:' . $id;
    }

    private function copy(\RedisCluster $redis, string $old): void
    {
        $fields = $redis->hGetAll("session:$old");
        if (is_array($fields) && $fields) {
            $redis->hMSet($this->key(), $fields);
            $redis->expire($this->key(), $this->ttl);
        }
        $patterns = $redis->sMembers(self::grants($old));
        if (is_array($patterns) && $patterns) {
            $redis->sAdd(self::grants($this->id), ...$patterns);
            $redis->expire(self::grants($this->id), $this->ttl);
        }
        $redis->del("session:$old");
        $redis->del(self::grants($old));
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
