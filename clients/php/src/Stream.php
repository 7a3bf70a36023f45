<?php

declare(strict_types=1);

namespace Tempest;

/** The body of a streamed answer (Context::stream): write() pieces, then close() or abort(). */
final class Stream
{
    public bool $closed = false;

    public function __construct(private Context $context)
    {
    }

    /** Send a piece of the body (a PHP string: its bytes, sent as they are). */
    public function write(string $data): void
    {
        if ($this->closed) {
            throw new \LogicException('write to a closed stream');
        }
        if ($data !== '') {
            $context = $this->context;
            $context->worker->sendCommand($context->respondTo, 'chunk', $context->jobId, $data);
        }
    }

    /** End the body. */
    public function close(): void
    {
        $this->end();
    }

    /** Give up: tempestd closes the client's connection without ending the body. */
    public function abort(): void
    {
        $this->end('abort');
    }

    private function end(string ...$how): void
    {
        if (!$this->closed) {
            $this->closed = true;
            $context = $this->context;
            $context->worker->sendCommand($context->respondTo, 'end', $context->jobId, ...$how);
        }
    }
}
