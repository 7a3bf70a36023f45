#!/usr/bin/env node
'use strict';
// Test workers built on clients/node, by role:
//   app QUEUE [--reliable|--plain] [--heartbeat S]: url jobs, by path (see below); without
//       --reliable or --plain, the client's default (reliable, unless TEMPEST_RELIABLE says no)
//       .../digest[?reader=whole]: the body read with context.bodyStream() (or context.body()),
//       answered as JSON {form, size, sha256}; a BodyGone error is answered 410
//   greeter QUEUE: answers `greet` jobs (forwarded by another worker) with an HTTP answer
//   squarer QUEUE: answers `square` jobs with the square of their number
const crypto = require('crypto');
const path = require('path');
const { Worker, BodyGone } = require(path.join(__dirname, '..', '..', '..', 'clients', 'node'));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (body, status = 200, headers = {}) => [status, { 'Content-Type': 'text/plain', ...headers }, body];

/** The body as the handler reads it: which form it came in (the env's key), its size and SHA-256. */
async function digest(context, env, reader) {
  const form = ['body_file', 'body_key', 'body_base64', 'body'].find((key) => key in env) || 'none';
  const hash = crypto.createHash('sha256');
  let size = 0;
  try {
    if (reader === 'whole') {
      const body = await context.body();
      hash.update(body);
      size = body.length;
    } else {
      for await (const block of context.bodyStream()) {
        hash.update(block);
        size += block.length;
      }
    }
  } catch (error) {
    if (error instanceof BodyGone) return text(`${error.name}: ${error.message}`, 410);
    throw error;
  }
  return [200, { 'Content-Type': 'application/json' }, JSON.stringify({ form, size, sha256: hash.digest('hex') })];
}

function app(worker, queue) {
  worker.on('url', async (context, env) => {
    const url = new URL(env.url, 'http://localhost');
    const q = Object.fromEntries(url.searchParams);
    if (url.pathname.endsWith('/digest')) return digest(context, env, q.reader);
    switch (url.pathname) {
      case '/stream': {
        const out = await context.stream(200, { 'Content-Type': 'text/plain' });
        for (let i = 0; i < 3; i++) {
          await out.write(`chunk ${i}\n`);
          await sleep(Number(q.pause || 100));
        }
        await out.close();
        return null;
      }
      case '/abort': {
        const out = await context.stream(200, { 'Content-Type': 'text/plain' });
        await out.write('partial\n');
        throw new Error('failed in the middle of a stream');
      }
      case '/fail':
        throw new Error('asked to fail');
      case '/session/set':
        await context.session.update(q);
        return text('stored');
      case '/session/get':
        return text(JSON.stringify(await context.session.get(q.field)));
      case '/session/regenerate': {
        const old = context.session.id;
        const id = await context.session.regenerate();
        return text(`${old} -> ${id}`);
      }
      case '/publish':
        return text(String(await worker.publish(q.channel, q.data, q.event || null)));
      case '/forward':
        await context.forward(q.to, 'greet', { path: url.pathname, via: process.pid });
        return null;
      case '/gather': {
        const parts = q.q.split(',').map((name, i) => [name, 'square', [i + 1]]);
        const results = await context.gather(parts, Number(q.timeout || 2));
        const missing = results.map((r, i) => (r === null ? i : null)).filter((i) => i !== null);
        return text(String(results.reduce((sum, r) => sum + (r || 0), 0)), 200, { 'X-Missing': missing.join(',') });
      }
      case '/record': { // ?list=L&tag=T: RPUSH L "T <length of this job's processing list>"
        const held = await worker.redis.sendCommand(['LLEN', `tempest:processing:{${queue}}:${worker.workerId}`]);
        await worker.redis.sendCommand(['RPUSH', q.list, `${q.tag} ${held}`]);
        return text('recorded');
      }
      case '/slow':
        process.stderr.write(`slow job started in ${process.pid}\n`);
        await sleep(Number(q.ms || 2000));
        return text(`slow done by ${process.pid}`);
      default:
        return text(`node ${process.pid} ${env.method} ${env.url}`);
    }
  });
}

function main() {
  const [role, queue, ...rest] = process.argv.slice(2);
  const heartbeat = rest.includes('--heartbeat') ? Number(rest[rest.indexOf('--heartbeat') + 1]) : 15;
  const reliable = rest.includes('--reliable') ? true : rest.includes('--plain') ? false : undefined;
  const worker = new Worker(queue, { reliable, heartbeat });
  if (role === 'app') app(worker, queue);
  else if (role === 'greeter') {
    worker.on('greet', (context, info) => {
      if (info.path === '/fail') throw new Error('asked to fail');
      return text(`node greeted ${info.path} from ${info.via}`);
    });
  } else if (role === 'squarer') {
    worker.on('square', (context, number) => number * number);
  } else throw new Error(`unknown role ${role}`);
  worker.run().then(() => process.exit(0), (error) => {
    console.error(error);
    process.exit(1);
  });
}

main();
