// The Node.js hello world that bench/peers.py measures: node peers_node.js PORT.
// Node's http module, one process, the hello worker's answer: "Hello world! #N".
"use strict";
const http = require("http");

let count = 0;
http.createServer((req, res) => {
  count += 1;
  const body = `Hello world! #${count}`;
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}).listen(Number(process.argv[2]), "127.0.0.1");
