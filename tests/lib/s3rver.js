#!/usr/bin/env node
/* tests/lib/s3rver.js: a real S3 server on loopback for the tests.
 *
 *   node tests/lib/s3rver.js DIR [BUCKET...] [--port N]
 *
 * Starts @20minutes/s3rver (4.x, which verifies SigV4 signatures; credentials
 * S3RVER / S3RVER) on 127.0.0.1, on a free port chosen by the kernel unless
 * --port is given (a test restarting the server on the same port and data
 * directory passes it), storing objects in DIR, with the given buckets
 * created. Prints "PORT <n>" on stdout once it accepts connections. Exits on
 * EOF of stdin (so it dies with the test that forked it) or on SIGTERM /
 * SIGINT. The module is found in build/node/node_modules (scripts/setup-deps
 * installs it there) or through NODE_PATH. */
'use strict';
const path = require('path');

let S3rver;
try {
  S3rver = require(path.join(__dirname, '../../build/node/node_modules/@20minutes/s3rver'));
} catch (e) {
  S3rver = require('@20minutes/s3rver');
}

const args = process.argv.slice(2);
let port = 0;
const rest = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') port = parseInt(args[++i], 10);
  else rest.push(args[i]);
}
if (rest.length < 1) {
  process.stderr.write('usage: s3rver.js DIR [BUCKET...] [--port N]\n');
  process.exit(2);
}
const [directory, ...buckets] = rest;

const server = new S3rver({
  address: '127.0.0.1',
  port,
  directory,
  silent: true,
  serviceEndpoint: 'localhost',   // virtual-hosted: BUCKET.s3.localhost
  configureBuckets: buckets.map((name) => ({ name })),
});

let closing = false;
function stop() {
  if (closing) return;
  closing = true;
  server.close().then(() => process.exit(0), () => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}

server.run().then(
  (addr) => {
    process.stdout.write(`PORT ${addr.port}\n`);
  },
  (err) => {
    process.stderr.write(`s3rver: ${err.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
