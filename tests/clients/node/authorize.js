#!/usr/bin/env node
'use strict';
// An authorize worker built on clients/node (docs/pubsub.md), for tests/e2e/test_private.py:
//   node authorize.js QUEUE
// allows a channel ending in ".node-yes" for 30 s, and "team.mine.<user>" when the session's
// user field (read with the job's session id, as any worker reads a session) is <user>; denies
// the rest. Each job is RPUSHed as received to the list "authorize-log:<QUEUE>".
const path = require('path');
const { Worker } = require(path.join(__dirname, '..', '..', '..', 'clients', 'node'));

function main() {
  const queue = process.argv[2];
  const worker = new Worker(queue, { heartbeat: 2 });
  worker.on('authorize', async (context, request) => {
    await worker.redis.rPush(`authorize-log:${queue}`, JSON.stringify([context.action, request]));
    const channel = request.channel;
    if (channel.endsWith('.node-yes')) return { allow: true, ttl: 30 };
    if (channel.startsWith('team.mine.') && request.session) {
      const raw = await worker.redis.hGet(`session:${request.session.id}`, 'user');
      const user = raw ? JSON.parse(raw)[0] : null;
      return { allow: user !== null && channel === `team.mine.${user}` };
    }
    return { allow: false };
  });
  worker.run().then(() => process.exit(0), (error) => {
    console.error(error);
    process.exit(1);
  });
}

main();
