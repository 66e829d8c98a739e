// The sender against a real HTTP server on 127.0.0.1: what it posts, its
// retries with the same events, its backoff, and the address rule.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';
import { EndpointSender, ForbiddenEndpointError, type DeliverySettings } from '../../src/notify/delivery.js';
import { sign } from '../../src/notify/envelope.js';
import { Notifier } from '../../src/notify/notifier.js';
import { Outbox } from '../../src/notify/outbox.js';
import { waitFor } from '../support/wait.js';

interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
}

let server: Server;
let url: string;
const received: Received[] = [];
let answers: number[] = [];
let dir: string;
const logLines: string[] = [];
const log = createLogger('info', new Writable({ write: (chunk, _enc, cb) => void (logLines.push(String(chunk)), cb()) }));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'stevedore-delivery-'));
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString(), at: Date.now() });
      res.statusCode = answers.shift() ?? 200;
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?token=secret-in-query`;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const settings = (overrides: Partial<DeliverySettings> = {}): DeliverySettings => ({
  name: 'test',
  url,
  allow: ['127.0.0.1'],
  headers: { Authorization: 'Bearer receiver-token' },
  timeoutMs: 2_000,
  threshold: 2,
  backoffMs: 100,
  maxBackoffMs: 400,
  format: 'v2',
  secret: 'shh',
  maxEvents: 3,
  maxWaitMs: 50,
  ...overrides,
});

const rows = (from: number, count: number) => [{ endpoint: 'test', events: Array.from({ length: count }, (_, i) => `{"id":"e${from + i}"}`), recordedAt: Date.now() }];

test('failed batches are retried with the same events, with backoff doubling past the threshold up to its cap', async () => {
  received.length = 0;
  answers = [500, 500, 503, 500, 500];
  const outbox = new Outbox(join(dir, 'retry.db'));
  // Jitter at its ceiling: each delay is the whole backoff step.
  const sender = new EndpointSender(settings(), outbox, log, () => 1);
  const gaps: number[] = [];
  try {
    outbox.append(rows(0, 2), 100);
    sender.start();
    sender.wake();
    await waitFor('the sixth attempt to succeed', () => received.length === 6 && sender.status().pending === 0);
    for (let i = 1; i < received.length; i++) gaps.push(received[i]!.at - received[i - 1]!.at);
    const bodies = new Set(received.map((r) => r.body));
    assert.deepEqual([...bodies], ['{"events":[{"id":"e0"},{"id":"e1"}]}'], 'every attempt sends the same batch');
    // 100, 100 within the threshold, then 200 and 400, then capped at 400.
    const expected = [100, 100, 200, 400, 400];
    gaps.forEach((gap, i) => assert.ok(gap >= expected[i]! - 5 && gap < expected[i]! + 300, `retry ${i + 1} waited ${gap} ms, expected about ${expected[i]}`));
    const status = sender.status();
    assert.deepEqual([status.delivered, status.failedAttempts, status.consecutiveFailures, status.state === 'retrying'], [2, 5, 0, false]);
    assert.ok(status.lastSuccessAt !== undefined && status.lastFailure?.message === 'answered 500');
    assert.equal(status.url, `${new URL(url).origin}/…`, 'neither the path nor the query (either may hold a token) is shown');
  } finally {
    await sender.stop();
    outbox.close();
  }
});

test('a batch carries at most maxEvents, signed, with the configured headers and the envelope media type', async () => {
  received.length = 0;
  answers = [];
  const outbox = new Outbox(join(dir, 'batch.db'));
  const sender = new EndpointSender(settings({ format: 'v1' }), outbox, log);
  try {
    outbox.append([...rows(0, 2), ...rows(2, 2), ...rows(4, 3)], 100);
    sender.start();
    await waitFor('all seven events', () => sender.status().delivered === 7);
    assert.deepEqual(received.map((r) => JSON.parse(r.body).events.length), [2, 2, 3], 'whole rows, at most maxEvents');
    assert.deepEqual(received.flatMap((r) => JSON.parse(r.body).events.map((e: { id: string }) => e.id)), ['e0', 'e1', 'e2', 'e3', 'e4', 'e5', 'e6']);
    for (const r of received) {
      assert.equal(r.headers['content-type'], 'application/vnd.docker.distribution.events.v1+json');
      assert.equal(r.headers.authorization, 'Bearer receiver-token');
      assert.equal(r.headers['stevedore-signature-256'], sign('shh', r.body));
      assert.equal(r.headers['stevedore-event-count'], String(JSON.parse(r.body).events.length));
    }
    assert.ok(!logLines.join('').includes('receiver-token') && !logLines.join('').includes('secret-in-query'), 'no header value or query in the logs');
  } finally {
    await sender.stop();
    outbox.close();
  }
});

test('a loopback or metadata address needs allow; a host name resolving there is refused at connect time', async () => {
  const outbox = new Outbox(join(dir, 'guard.db'));
  try {
    assert.throws(() => new EndpointSender(settings({ allow: [] }), outbox, log), ForbiddenEndpointError);
    assert.throws(() => new EndpointSender(settings({ url: 'http://169.254.169.254/latest', allow: [] }), outbox, log), ForbiddenEndpointError);
    received.length = 0;
    const sender = new EndpointSender(settings({ url: url.replace('127.0.0.1', 'localhost'), allow: [] }), outbox, log);
    outbox.append([{ endpoint: 'test', events: ['{"id":"x"}'], recordedAt: 0 }], 100);
    sender.start();
    await waitFor('the first attempt to fail', () => sender.status().failedAttempts >= 1);
    await sender.stop();
    assert.equal(received.length, 0, 'nothing reached the loopback receiver');
    assert.match(sender.status().lastFailure!.message, /refusing to connect to localhost/);
  } finally {
    outbox.close();
  }
});

test('the notifier filters per endpoint and writes one serialized copy per endpoint; a typo in ignore.actions names its key', async () => {
  received.length = 0;
  answers = [];
  const base = { ...settings(), maxEvents: 100, disabled: false };
  const notifier = new Notifier({
    endpoints: [
      { ...base, name: 'all', filter: { actions: [], mediaTypes: [], hits: false } },
      { ...base, name: 'misses', url: url.replace('/hook', '/misses'), filter: { actions: ['fill.*'], mediaTypes: ['application/x-ignored'], hits: true } },
    ],
    maxPending: 100,
    outboxPath: join(dir, 'notifier.db'),
    source: { addr: 'mirror:5000', instanceID: 'test-instance' },
    log,
  });
  notifier.start();
  try {
    notifier.record({ action: 'pull', target: { digest: 'sha256:1', size: 5 }, detail: { outcome: 'hit' } });
    notifier.record({ action: 'pull', target: { digest: 'sha256:2' }, detail: { outcome: 'miss' } });
    notifier.record({ action: 'fill.completed', target: { digest: 'sha256:2' } });
    notifier.record({ action: 'cache.evicted', target: { digest: 'sha256:3', mediaType: 'application/x-ignored' } });
    await waitFor('both endpoints served', () => notifier.status().endpoints.every((e) => e.pending === 0) && notifier.status().endpoints[0]!.delivered === 4);
    const of = (path: string) => received.filter((r) => r.path.startsWith(path)).flatMap((r) => JSON.parse(r.body).events as { id: string; action: string; target: { digest: string; length?: number }; source: unknown }[]);
    const all = of('/hook');
    const misses = of('/misses');
    const ids = new Map(all.map((e) => [e.target.digest + e.action, e.id]));
    assert.deepEqual(misses.map((e) => [e.action, e.target.digest]), [['pull', 'sha256:2']], 'hits, fills and the ignored media type were left out for the second endpoint');
    assert.deepEqual(all.map((e) => e.action), ['pull', 'pull', 'fill.completed', 'cache.evicted']);
    assert.equal(ids.size, 4);
    assert.equal(misses[0]!.id, ids.get('sha256:2pull'), 'the event sent to both endpoints has one id');
    const hit = all.find((e) => e.target.digest === 'sha256:1')!;
    assert.deepEqual([hit.target.length, hit.source], [5, { addr: 'mirror:5000', instanceID: 'test-instance' }]);
    assert.equal(notifier.status().recorded, 4);
  } finally {
    await notifier.stop();
  }
  assert.throws(
    () => new Notifier({ endpoints: [{ ...base, name: 'x', filter: { actions: ['pull', 'fil.completed'], mediaTypes: [], hits: false } }], maxPending: 1, outboxPath: join(dir, 'typo.db'), source: { addr: '', instanceID: '' }, log }),
    (err: Error & { index?: number; key?: string }) => err.key === 'ignore.actions.1' && err.index === 0 && /fil\.completed/.test(err.message),
  );
});

test('the server refuses to start on a loopback endpoint without allow, naming the key', async () => {
  const { validateConfig } = await import('../../src/config/load.js');
  const { ConfigError } = await import('../../src/config/errors.js');
  const { openNotifier } = await import('../../src/stevedore.js');
  const config = validateConfig({ cache: { dir }, notifications: { endpoints: [{ name: 'a', url: 'https://x.example/' }, { name: 'b', url: 'http://127.0.0.1:9/in' }] } });
  assert.throws(() => openNotifier(config, 'id', log, { deliver: false }), (err: Error) => err instanceof ConfigError && err.message.startsWith('invalid config key "notifications.endpoints.1.url"'));
  const typo = validateConfig({ cache: { dir }, notifications: { endpoints: [{ name: 'a', url: 'https://x.example/', ignore: { actions: ['upstream.circut.*'] } }] } });
  assert.throws(() => openNotifier(typo, 'id', log, { deliver: false }), (err: Error) => err instanceof ConfigError && err.message.startsWith('invalid config key "notifications.endpoints.0.ignore.actions.0"'));
});

test('an outbox that fails under the sender is a failed attempt, not a crash; events dropped while a batch is in flight are not counted twice', async () => {
  received.length = 0;
  answers = [];
  const outbox = new Outbox(join(dir, 'broken.db'));
  const sender = new EndpointSender(settings({ backoffMs: 20, maxBackoffMs: 20 }), outbox, log);
  outbox.close();
  sender.start();
  await waitFor('the sender to report the outbox failure', () => (sender.status().lastFailure?.message ?? '').startsWith('outbox:'));
  assert.equal(sender.status().state, 'retrying');
  await sender.stop();

  // A batch in flight (taken) while the outbox overflows: the drop takes the rows after it.
  const full = new Outbox(join(dir, 'inflight.db'));
  try {
    full.append(rows(0, 3), 5);
    const taken = full.take('test', 3)!;
    const dropped = full.append([...rows(3, 3), ...rows(6, 3)], 5);
    assert.deepEqual([...dropped], [['test', 4]], 'four of the newer events go, not the three in flight');
    full.acknowledge('test', taken);
    assert.deepEqual([full.pending('test'), full.recount('test')], [2, 2]);
    assert.deepEqual(full.take('test', 10)!.events, ['{"id":"e7"}', '{"id":"e8"}']);
  } finally {
    full.close();
  }
});
