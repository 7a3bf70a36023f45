<?php

declare(strict_types=1);

namespace Tempest;

/** Redis answered a command with an error reply (phpredis' RedisException is for the connection). */
final class RedisError extends \RuntimeException
{
}
