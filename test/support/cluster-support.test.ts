// The cluster test support checked against itself: a real redis-server that
// can be killed and brought back empty, and nginx rotating over two backends
// and skipping the one that went away.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { balancerUnavailableReason, startBalancer } from './nginx-balancer.js';
import { redisUnavailableReason, startRedis } from './redis.js';
import { requirement } from './requirements.js';

const redis = requirement('redis-server', await redisUnavailableReason());
const nginx = requirement('nginx', await balancerUnavailableReason());

/** The error code of a raw connect to the port, or 'connected'. */
function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

redis.test('redis: commands, kill, and a restart on the same port comes back empty', { timeout: 30_000 }, async () => {
  const server = await startRedis();
  try {
    assert.match(server.url, /^redis:\/\/127\.0\.0\.1:\d+\/0$/);
    assert.equal(await server.command('SET', 'k', 'v', 'PX', '60000'), 'OK');
    assert.equal(await server.command('GET', 'k'), 'v');
    const pttl = await server.command('PTTL', 'k');
    assert.equal(typeof pttl, 'number');
    assert.ok((pttl as number) > 0 && (pttl as number) <= 60_000, `PTTL ${pttl}`);
    assert.deepEqual(await server.keys(), ['k']);
    assert.deepEqual(await server.command('MGET', 'k', 'missing'), ['v', null]);
    await assert.rejects(server.command('NOSUCHCOMMAND'), /unknown command/i);

    const firstPid = server.pid;
    await server.kill();
    assert.equal(await connectOutcome(server.port), 'ECONNREFUSED');

    await server.start();
    assert.notEqual(server.pid, firstPid);
    assert.equal(await server.command('PING'), 'PONG');
    assert.equal(await server.command('GET', 'k'), null, 'nothing is persisted across a restart');
    assert.deepEqual(await server.keys(), []);
  } finally {
    await server.stop();
  }
  assert.equal(await connectOutcome(server.port), 'ECONNREFUSED');
});

/** An HTTP server answering `name` on every path. */
async function namedBackend(name: string): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(name);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function closeBackend(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  // nginx keeps idle upstream connections open; drop them so the backend is really gone.
  server.closeAllConnections();
  await closed;
}

nginx.test('balancer: round robin over two backends, then only the one still up', { timeout: 30_000 }, async () => {
  const a = await namedBackend('a');
  const b = await namedBackend('b');
  const balancer = await startBalancer([a.url, b.url]);
  let bClosed = false;
  try {
    const seen = new Map<string, number>();
    for (let i = 0; i < 6; i++) {
      const res = await request(`${balancer.url}/v2/`);
      const body = await res.body.text();
      assert.equal(res.statusCode, 200, body);
      seen.set(body, (seen.get(body) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(seen), { a: 3, b: 3 });

    await closeBackend(b.server);
    bClosed = true;
    for (let i = 0; i < 4; i++) {
      const res = await request(`${balancer.url}/v2/library/alpine/manifests/latest`);
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), 'a');
    }
  } finally {
    await balancer.stop();
    await closeBackend(a.server);
    if (!bClosed) await closeBackend(b.server);
  }
});
