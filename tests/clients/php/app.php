<?php
// The PHP test worker: php app.php QUEUE[,QUEUE...] [NEXT_QUEUE]
// TEMPEST_TEST_RELIABLE=1: reliable delivery with a 1 s heartbeat; =0: 'reliable' => false;
// unset: the client's default (reliable, unless TEMPEST_RELIABLE says no).
//
// url paths: /stream, /gated (waits for an item on gate:/gated between its chunks), /abort (raises in the middle of a stream), /session/set?v=, /session/get,
// /session/regenerate, /publish?channel=&data=&event=, /forward (a `greet` job to NEXT_QUEUE),
// /gather?q=a,b&timeout= (square parts, summed; missing indexes in X-Missing), /fail, /slow?ms=,
// /record?list=L&tag=T (RPUSH L "T <length of this worker's processing list of each queue, /-separated>"),
// .../digest?reader=generator|stream|hash (the body read with $context->body(), with fread() on
// $context->bodyStream(), or hash_update_stream() on it: JSON {form, size, sha256}; BodyGone: 410),
// anything else: "php <pid> <path>". Also `greet` jobs (as tests/workers/routing.py's greeter)
// and `square` jobs.

declare(strict_types=1);

require __DIR__ . '/../../../clients/php/src/autoload.php';

use Tempest\BodyGone;
use Tempest\Context;
use Tempest\Worker;

$queues = explode(',', $argv[1] ?? 'tempest');
$next = $argv[2] ?? 'tempest';
$options = match (getenv('TEMPEST_TEST_RELIABLE')) {
    '1' => ['reliable' => true, 'heartbeat' => 1.0],
    '0' => ['reliable' => false],
    default => [],
};
$worker = new Worker($queues, $options);
$text = ['Content-Type' => 'text/plain'];

/** The body as the handler reads it: the form it came in (the env's key), its size and SHA-256. */
function digest(Context $context, array $env, string $reader): array
{
    $form = 'none';
    foreach (['body_file', 'body_key', 'body_base64', 'body'] as $key) {
        if (array_key_exists($key, $env)) {
            $form = $key;
            break;
        }
    }
    $hash = hash_init('sha256');
    $size = 0;
    try {
        if ($reader === 'generator') {
            foreach ($context->body() as $block) {
                hash_update($hash, $block);
                $size += strlen($block);
            }
        } elseif ($reader === 'hash') {
            $size = hash_update_stream($hash, $context->bodyStream());
        } else {
            $stream = $context->bodyStream();
            while (!feof($stream)) {
                $block = fread($stream, 65536);
                hash_update($hash, $block);
                $size += strlen($block);
            }
            fclose($stream);
        }
    } catch (BodyGone $error) {
        return [410, ['Content-Type' => 'text/plain'], 'BodyGone: ' . $error->getMessage()];
    }
    return [200, ['Content-Type' => 'application/json'],
        Worker::json(['form' => $form, 'size' => $size, 'sha256' => hash_final($hash)])];
}

$worker->on('url', function (Context $context, array $env) use ($worker, $queues, $next, $text) {
    [$path, $query] = array_pad(explode('?', $env['url'], 2), 2, '');
    parse_str($query, $params);
    if (str_ends_with($path, '/digest')) {
        return digest($context, $env, $params['reader'] ?? 'generator');
    }
    switch ($path) {
        case '/stream':
            $out = $context->stream(200, $text);
            foreach (['one', 'two', 'three'] as $piece) {
                $out->write("$piece\n");
                usleep(50000);
            }
            $out->close();
            return null;
        case '/gated':
            $out = $context->stream(200, $text);
            $out->write("one\n");
            $worker->redis()->blPop(['gate:' . $context->env['url']], 5);  // the test reads "one" first
            $out->write("two\n");
            $out->close();
            return null;
        case '/abort':
            $out = $context->stream(200, $text);
            $out->write("partial\n");
            throw new RuntimeException('failed in the middle of a stream');
        case '/session/set':
            $session = $context->session;
            $session['user'] = $params['v'] ?? 'nobody';
            $session->update(['n' => 42, 'list' => [1, 'two']]);
            return [200, $text, $session->id];
        case '/session/get':
            return [200, ['Content-Type' => 'application/json'], Worker::json($context->session->all() ?: new stdClass())];
        case '/session/regenerate':
            $session = $context->session;
            $old = $session->id;
            $new = $session->regenerate();
            $session['after'] = 'login';
            return [200, $text, "$old $new"];
        case '/publish':
            $result = $worker->publish($params['channel'], $params['data'] ?? '', $params['event'] ?? null);
            return [200, $text, (string) $result];
        case '/forward':
            $context->forward($next, 'greet', ['path' => $path, 'via' => getmypid()]);
            return null;
        case '/gather':
            $parts = [];
            foreach (explode(',', $params['q']) as $i => $queue) {
                $parts[] = [$queue, 'square', [$queue === 'silent' ? -1 : $i + 1]];
            }
            $results = $context->gather($parts, (float) ($params['timeout'] ?? 2));
            $missing = array_keys(array_filter($results, fn ($r) => $r === null));
            return [200, $text + ['X-Missing' => implode(',', $missing)], (string) array_sum($results)];
        case '/record':
            $held = array_map(fn (string $queue) => $worker->redis()->lLen("tempest:processing:{{$queue}}:{$worker->workerId}"),
                $queues);
            $worker->redis()->rPush($params['list'], $params['tag'] . ' ' . implode('/', $held));
            return [200, $text, 'recorded'];
        case '/fail':
            throw new RuntimeException('asked to fail');
        case '/slow':
            $end = microtime(true) + ((int) ($params['ms'] ?? 1500)) / 1000;
            while (($left = $end - microtime(true)) > 0) {
                usleep((int) ($left * 1e6));  // a signal may cut a usleep short: sleep again
            }
            return [200, $text, 'slow done by ' . getmypid()];
        default:
            return [200, $text, 'php ' . getmypid() . ' ' . $path];
    }
});

$worker->on('greet', function (Context $context, array $info) use ($text) {
    if ($info['path'] === '/fail') {
        throw new RuntimeException('asked to fail');
    }
    return [200, $text, "php greeted {$info['path']} from {$info['via']}"];
});

$worker->on('square', fn (Context $context, int $number) => $number * $number);

$worker->run();
