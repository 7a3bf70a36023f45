<?php

declare(strict_types=1);

namespace Tempest;

/**
 * A spooled request body that is no longer there (its request was answered, timed out or its
 * client left; a Redis body expired), or not the bytes its token describes (shorter than its
 * `size`, another `sha256`): the Python library's tempest.spool.BodyGone.
 */
final class BodyGone extends \RuntimeException
{
}
