// Server limits: slow or oversized requests and too many connections each get
// a clear OCI error instead of a hang, a reset or a bare status line.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { rawExchange, type RawAnswer } from '../support/raw-http.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { seedStandard } from '../support/seed-standard.js';
import { pushBlob, type PushedBlob } from '../support/seed.js';
import { waitFor } from '../support/wait.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';

let registry: RegistryHandle;
let mirror: TestMirror;
let port: number;
let big: PushedBlob;
const MAX_CONNECTIONS = 6;
const PER_CLIENT = 3;

before(async () => {
  registry = await startRegistry();
  await seedStandard(registry.url);
  big = await pushBlob(registry.url, 'acme/big', { size: 48 * 1024 * 1024, seed: 'zero-window' });
  mirror = await startMirror({
    upstreams: [{ registry: 'docker.io', url: registry.url }],
    extra: {
      limits: { headersTimeout: '1s', requestTimeout: '2s', maxConnections: MAX_CONNECTIONS, maxConnectionsPerClient: PER_CLIENT, sendTimeout: '1s', maxHeaderSize: '8KiB' },
    },
  });
  port = Number(new URL(mirror.url).port);
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
});

/** Writes `parts` to a fresh socket and reads until the server closes it or `waitMs` passes. */
const raw = (parts: string[], options: { gapMs?: number; waitMs?: number } = {}): Promise<RawAnswer> => rawExchange(port, parts, options);

test('a client that trickles its headers (slowloris) gets 408 with an OCI error and is disconnected', async () => {
  const parts = ['GET /v2/ HTTP/1.1\r\n', 'Host: mirror\r\n', ...Array.from({ length: 30 }, (_, i) => `X-Slow-${i}: a\r\n`)];
  const answer = await raw(parts, { gapMs: 200, waitMs: 10_000 });
  assert.equal(answer.status, 408);
  assert.equal(JSON.parse(answer.body).errors[0].message, 'request timed out');
  assert.ok(answer.closed, 'the connection is closed');
  assert.ok(answer.ms < 6_000, `cut off after ${answer.ms} ms, well before the trickle would end`);
});

test('an idle connection that never sends a request is closed', async () => {
  const answer = await raw([], { waitMs: 10_000 });
  assert.ok(answer.closed);
  assert.ok(answer.ms < 8_000, `closed after ${answer.ms} ms`);
});

test('oversized headers get 431 SIZE_INVALID; a malformed request line gets 400 JSON', async () => {
  const big = await raw([`GET /v2/ HTTP/1.1\r\nHost: m\r\nX-Big: ${'a'.repeat(16 * 1024)}\r\n\r\n`]);
  assert.equal(big.status, 431);
  assert.equal(JSON.parse(big.body).errors[0].code, 'SIZE_INVALID');
  const broken = await raw(['GARBAGE \x00\x01 nonsense\r\n\r\n']);
  assert.equal(broken.status, 400);
  assert.equal(JSON.parse(broken.body).errors[0].message, 'malformed HTTP request');
});

test('connections beyond maxConnections get 429 TOOMANYREQUESTS with Retry-After, and service resumes when they close', async () => {
  const held: Socket[] = [];
  try {
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      // From several addresses, so the per-client limit is not what refuses the next one.
      const socket = connect({ port, host: '127.0.0.1', localAddress: `127.0.1.${i}` });
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      held.push(socket);
    }
    await waitFor('the server to count every held connection', () => mirror.stevedore.connections.open === MAX_CONNECTIONS);
    const refused = await raw(['GET /v2/ HTTP/1.1\r\nHost: m\r\n\r\n']);
    assert.equal(refused.status, 429);
    assert.match(refused.headers, /retry-after: 1/);
    assert.equal(JSON.parse(refused.body).errors[0].code, 'TOOMANYREQUESTS');
    assert.ok(refused.closed);
  } finally {
    for (const socket of held) socket.destroy();
  }
  await waitFor('the held connections to close', () => mirror.stevedore.connections.open === 0);
  const served = await raw(['GET /v2/ HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n']);
  assert.equal(served.status, 200);
});

test('connections beyond maxConnectionsPerClient from one address get 429; other addresses are still served', async () => {
  const held: Socket[] = [];
  try {
    for (let i = 0; i < PER_CLIENT; i++) {
      const socket = connect({ port, host: '127.0.0.1', localAddress: '127.0.2.1' });
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      held.push(socket);
    }
    await waitFor('the server to count the held connections', () => mirror.stevedore.connections.open === PER_CLIENT);
    const refused = await rawExchange(port, ['GET /v2/ HTTP/1.1\r\nHost: m\r\n\r\n'], { localAddress: '127.0.2.1' });
    assert.equal(refused.status, 429);
    assert.equal(JSON.parse(refused.body).errors[0].code, 'TOOMANYREQUESTS');
    assert.match(JSON.parse(refused.body).errors[0].detail, /from one client address/);
    assert.ok(refused.closed);
    const other = await rawExchange(port, ['GET /v2/ HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n'], { localAddress: '127.0.2.2' });
    assert.equal(other.status, 200);
  } finally {
    for (const socket of held) socket.destroy();
  }
});

test('a client that stops reading mid-blob (a zero window) is disconnected after sendTimeout, and others are unaffected', async () => {
  const path = `/v2/acme/big/blobs/${big.digest}`;
  const warm = await rawExchange(port, [`GET ${path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n`], { waitMs: 60_000 });
  assert.equal(warm.status, 200, 'the blob is cached first');
  const socket = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = 0;
  socket.on('error', () => undefined);
  socket.once('data', (chunk: Buffer) => {
    received += chunk.length;
    socket.pause(); // reads nothing more: the kernel buffers fill and the server's writes stop moving
  });
  socket.write(`GET ${path} HTTP/1.1\r\nHost: m\r\n\r\n`);
  await waitFor('the stalled connection to be cut', () => mirror.logs().some((l) => l.msg === 'client read nothing for sendTimeout: connection closed'), 15_000);
  // Reading again, the client finds a cut-off response: what the buffers held, then the end.
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  socket.resume();
  await closed;
  assert.ok(received > 0 && received < big.size, `the client got ${received} of ${big.size} bytes: the start of the blob only`);
  const line = mirror.logs().find((l) => l.msg === 'request' && l.path === path && l.aborted === true);
  assert.ok(line, 'the request is logged as aborted');
  const next = await rawExchange(port, ['GET /v2/ HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n']);
  assert.equal(next.status, 200);
});
