<?php
// The PHP leg of the mixed tests: `part` jobs are answered {lang, n}.
// Usage: php part.php QUEUE
require __DIR__ . '/../../../clients/php/src/autoload.php';

$worker = new Tempest\Worker([$argv[1]]);
$worker->on('part', fn ($context, $n) => ['lang' => 'php', 'n' => $n]);
$worker->run();
