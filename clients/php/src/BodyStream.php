<?php

declare(strict_types=1);

namespace Tempest;

/**
 * A read-only stream resource over a generator of strings (Body::chunks): the stream wrapper
 * behind Context::bodyStream(). Exceptions of the generator (BodyGone) reach the caller of
 * fread(), stream_get_contents(), hash_update_stream()...
 */
final class BodyStream
{
    public const SCHEME = 'tempest-body';

    /** @var resource|null the stream context, set by PHP */
    public $context;
    private \Generator $chunks;
    private string $buffer = '';
    private int $offset = 0;     // where the unread part of $buffer begins (no copy per read)
    private bool $started = false;
    private bool $done = false;

    /**
     * @param \Generator<int, string> $chunks
     * @return resource
     */
    public static function open(\Generator $chunks)
    {
        if (!in_array(self::SCHEME, stream_get_wrappers(), true)) {
            stream_wrapper_register(self::SCHEME, self::class);
        }
        $context = stream_context_create([self::SCHEME => ['chunks' => $chunks]]);
        return fopen(self::SCHEME . '://body', 'rb', false, $context);
    }

    public function stream_open(string $path, string $mode, int $options, ?string &$openedPath): bool
    {
        $chunks = stream_context_get_options($this->context)[self::SCHEME]['chunks'] ?? null;
        if (!$chunks instanceof \Generator || !str_contains($mode, 'r') || str_contains($mode, '+')) {
            return false;
        }
        $this->chunks = $chunks;
        return true;
    }

    public function stream_read(int $count): string|false
    {
        if ($this->offset >= strlen($this->buffer)) {
            $this->buffer = '';
            $this->offset = 0;
            if ($this->done) {
                return '';
            }
            if ($this->started) {
                $this->chunks->next();
            }
            $this->started = true;
            if (!$this->chunks->valid()) {
                $this->done = true;
                return '';
            }
            $this->buffer = $this->chunks->current();
        }
        $out = substr($this->buffer, $this->offset, $count);
        $this->offset += strlen($out);
        return $out;
    }

    public function stream_eof(): bool
    {
        return $this->done;
    }

    public function stream_stat(): array|false
    {
        return [];
    }

    public function stream_close(): void
    {
        unset($this->chunks);  // a file's generator closes its file
    }
}
