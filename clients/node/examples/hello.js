#!/usr/bin/env node
'use strict';
// Hello world: answers every request with this process's count of answers.
// Run: node examples/hello.js [queue] [--reliable]   (Redis from TEMPEST_REDIS_URL)
const { Worker } = require('..');

const argv = process.argv.slice(2);
const reliable = argv.includes('--reliable');
const queue = argv.filter((arg) => arg !== '--reliable')[0] || 'tempest';
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
