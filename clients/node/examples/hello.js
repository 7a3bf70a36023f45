#!/usr/bin/env node
'use strict';
// Hello world: answers every request with this process's count of answers.
// Run: node examples/hello.js [queue] [--plain]   (Redis from TEMPEST_REDIS_URL)
// Reliable delivery unless --plain (or TEMPEST_RELIABLE=0).
const { Worker } = require('..');

const argv = process.argv.slice(2);
const flags = ['--plain', '--reliable']; // --reliable: the default, kept for old command lines
const reliable = argv.includes('--plain') ? false : argv.includes('--reliable') ? true : undefined;
const queue = argv.filter((arg) => !flags.includes(arg))[0] || 'tempest';
const worker = new Worker(queue, { reliable });
let count = 0;

worker.on('url', () => {
  count += 1;
  return [200, { 'Content-Type': 'text/plain' }, `Hello from node #${count}`];
});

worker.run().then(() => process.exit(0), (error) => {
  console.error(error);
  process.exit(1);
});
