<?php

declare(strict_types=1);

namespace Tempest;

/**
 * A url job's request body, wherever it is (docs/protocol.md, "Spooled bodies"): the spooled
 * file (env `body_file`, opened read-only and read in blocks), its chunks in Redis (`body_key`,
 * one LINDEX each as the reader gets to it), or the inline `body` / `body_base64`. A spooled
 * body is read up to its token's `size` and hashed on the way: a body shorter than its size,
 * a missing chunk or another SHA-256 throws BodyGone before its last block is given out.
 */
final class Body
{
    public const BLOCK = 262144;  // bytes read from a spooled file at a time (a Redis chunk's size)

    /**
     * The body as a generator of strings (binary), in order.
     *
     * @param array $env a url job's env
     * @param \Redis|\RedisCluster|null $redis a connection to the queues' Redis (needed for `body_key` only)
     * @return \Generator<int, string>
     * @throws BodyGone at once for a spooled file that does not exist; while iterating for a
     *     missing chunk, a short body or another sha256
     */
    public static function chunks(array $env, \Redis|\RedisCluster|null $redis): \Generator
    {
        if (is_array($env['body_file'] ?? null)) {
            $token = self::token($env['body_file'], 'path');
            return self::checked(self::fileBlocks(self::open($token['path'])), $token, $token['path']);
        }
        if (is_array($env['body_key'] ?? null)) {
            $token = self::token($env['body_key'], 'key');
            if ($redis === null) {
                throw new \InvalidArgumentException('a body in Redis (body_key) needs a Redis connection');
            }
            $blocks = self::redisChunks($redis, $token['key'], (int) ($token['chunks'] ?? 0));
            return self::checked($blocks, $token, $token['key']);
        }
        if (isset($env['body_base64'])) {
            return self::inline((string) base64_decode((string) $env['body_base64']));
        }
        return self::inline(is_string($env['body'] ?? null) ? $env['body'] : '');
    }

    private static function token(array $token, string $where): array
    {
        if (!is_string($token[$where] ?? null) || !is_int($token['size'] ?? null) || $token['size'] < 0) {
            throw new \InvalidArgumentException("a spooled body's token without $where or size: " . json_encode($token));
        }
        return $token;
    }

    /** @return resource */
    private static function open(string $path)
    {
        $handle = @fopen($path, 'rb');
        if ($handle === false) {
            if (!file_exists($path)) {
                throw new BodyGone("spooled body $path is gone");
            }
            throw new \RuntimeException("cannot open the spooled body $path: " . (error_get_last()['message'] ?? '?'));
        }
        return $handle;
    }

    /** @param resource $handle */
    private static function fileBlocks($handle): \Generator
    {
        try {
            while (($block = fread($handle, self::BLOCK)) !== false && $block !== '') {
                yield $block;
            }
        } finally {
            fclose($handle);
        }
    }

    private static function redisChunks(\Redis|\RedisCluster $redis, string $key, int $chunks): \Generator
    {
        for ($index = 0; $index < $chunks; $index++) {
            $redis->clearLastError();
            // RedisCluster: the typed method, which follows MOVED and ASK (its rawCommand does not)
            $chunk = $redis instanceof \RedisCluster ? $redis->lIndex($key, $index) : $redis->rawCommand('LINDEX', $key, $index);
            if (!is_string($chunk) || $chunk === '') {
                if (($error = $redis->getLastError()) !== null) {
                    $redis->clearLastError();
                    throw new RedisError($error);
                }
                throw new BodyGone("spooled body $key: chunk $index of $chunks is gone");
            }
            yield $chunk;
        }
    }

    private static function checked(\Generator $blocks, array $token, string $where): \Generator
    {
        $size = $token['size'];
        $hash = hash_init('sha256');
        $read = 0;
        if ($size === 0) {
            self::check($hash, $token, $where);
            return;
        }
        foreach ($blocks as $block) {
            if ($read + strlen($block) > $size) {
                $block = substr($block, 0, $size - $read);  // `size` bytes, no more
            }
            hash_update($hash, $block);
            $read += strlen($block);
            if ($read === $size) {  // the last block: given out only once the whole body is checked
                self::check($hash, $token, $where);
                yield $block;
                return;
            }
            yield $block;
        }
        throw new BodyGone("spooled body $where is gone ($read of $size bytes read)");
    }

    private static function check(\HashContext $hash, array $token, string $where): void
    {
        $digest = hash_final($hash);
        $expected = $token['sha256'] ?? null;
        if (is_string($expected) && $digest !== strtolower($expected)) {
            throw new BodyGone("spooled body $where: its sha256 is $digest, not $expected as its token says");
        }
    }

    private static function inline(string $data): \Generator
    {
        if ($data !== '') {
            yield $data;
        }
    }
}
