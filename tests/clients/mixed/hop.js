// The Node.js leg of the mixed tests: `hop` jobs are passed on to the queue NEXT as `finish`
// jobs, with "node" added to the route; `part` jobs are answered {lang, n}.
// Usage: node hop.js QUEUE NEXT
const path = require('path');
const { Worker } = require(path.join(__dirname, '..', '..', '..', 'clients', 'node'));

const [queue, next] = process.argv.slice(2);
const worker = new Worker([queue]);
worker.on('hop', async (context, info) => {
  await context.forward(next, 'finish', { path: info.path, via: info.via.concat(['node']) });
});
worker.on('part', (context, n) => ({ lang: 'node', n }));
worker.run().then(() => process.exit(0));
