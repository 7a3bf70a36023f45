<?php
// The hello world: php clients/php/examples/hello.php [QUEUE]  (Redis from TEMPEST_REDIS_URL)

declare(strict_types=1);

require __DIR__ . '/../src/autoload.php';

use Tempest\Context;
use Tempest\Worker;

$worker = new Worker($argv[1] ?? 'tempest');
$count = 0;
$worker->on('url', function (Context $context, array $env) use (&$count): array {
    $count++;
    return [200, ['Content-Type' => 'text/plain'], "Hello from php #$count"];
});
$worker->run();
