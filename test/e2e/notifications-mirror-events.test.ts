// Every event only a mirror has, set off through its real path (a client pull,
// an upstream fault, a sweep, a warm-up, a damaged file) and checked as a real
// receiver process on 127.0.0.1 got it: action, target and `stevedore` detail.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushBlob, pushImage, type PushedBlob, type PushedImage } from '../support/seed.js';
import { runCli, startMirror, type MirrorOptions, type TestMirror } from '../support/stevedore.js';
import { startReceiver, type Receiver, type WireEvent } from '../support/webhook-receiver.js';
import { get, streamDigest } from '../support/http.js';
import { waitForAsync } from '../support/wait.js';
import { EVENTS_MEDIA_TYPES } from '../../src/notify/events.js';
import { parseDigest } from '../../src/oci/digest.js';
import type { JobRun } from '../../src/cache/job-history.js';

const KiB = 1024;
const INSTANCE = 'notify-events';
const PATH = '/events';
const ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest].join(', ');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
let registry: RegistryHandle;
let hub: HubDouble;
let image: PushedImage;
const blobs: Record<string, PushedBlob> = {};
const scratch = mkdtempSync(join(tmpdir(), 'stevedore-notify-events-'));

before(async () => {
  registry = await startRegistry();
  hub = await startHubDouble({ upstream: registry.url });
  image = await pushImage(registry.url, 'notify/app', 'v1', { layers: [40 * KiB, 20 * KiB], format: 'docker', seed: 'notify-app' });
  for (const [name, size] of [['fill', 300], ['corrupt', 200], ['quotaA', 700], ['quotaB', 700], ['idle', 50], ['gcA', 60], ['gcB', 70], ['serveSmall', 100], ['serveLarge', 512], ['verify', 256]] as const) {
    blobs[name] = await pushBlob(registry.url, 'notify/raw', { size: size * KiB, seed: `notify-${name}` });
  }
});

after(async () => {
  await hub?.stop();
  await registry?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** A receiver process, stopped by PID when the test ends. */
async function receiver(t: TestContext): Promise<Receiver> {
  const rx = await startReceiver();
  t.after(() => rx.stop());
  return rx;
}

const notifications = (rx: Receiver): Record<string, unknown> => ({
  endpoints: [{ name: 'all', url: `${rx.url}${PATH}`, allow: ['127.0.0.1'], batch: { maxWait: '100ms' } }],
});

/** An in-process mirror of the hub double whose one endpoint is `rx`, stopped when the test ends (t null: by the caller). */
async function mirror(t: TestContext | null, rx: Receiver, options: Partial<MirrorOptions> = {}): Promise<TestMirror> {
  const extra = { ...options.extra, notifications: notifications(rx) };
  const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url }], instanceId: INSTANCE, ...options, extra });
  t?.after(() => m.stop());
  return m;
}

/** What the receiver acknowledged, each event once (a retry repeats an id), in arrival order. */
function delivered(rx: Receiver): WireEvent[] {
  const seen = new Set<string>();
  return rx.events({ path: PATH, acknowledged: true }).filter((e) => !seen.has(e.id) && seen.add(e.id));
}

const ofAction = (rx: Receiver, action: string, digest?: string): WireEvent[] =>
  delivered(rx).filter((e) => e.action === action && (digest === undefined || e.target?.digest === digest));

/** Waits for the first delivered `action` event (about `digest`, when given) and checks its envelope. */
async function eventOf(rx: Receiver, action: string, digest?: string, timeoutMs = 20_000): Promise<WireEvent> {
  await rx.waitForEvents(`${action}${digest ? ` for ${digest}` : ''}`, () => ofAction(rx, action, digest).length > 0, timeoutMs, { path: PATH, acknowledged: true });
  const event = ofAction(rx, action, digest)[0]!;
  assert.match(event.id, UUID, 'a stable uuid');
  assert.ok(Number.isFinite(Date.parse(event.timestamp)) && event.timestamp.endsWith('Z'), `ISO timestamp: ${event.timestamp}`);
  assert.equal(event.source?.instanceID, INSTANCE);
  assert.equal(typeof event.stevedore, 'object', 'the mirror-only detail is there');
  if (event.target?.size !== undefined) assert.equal(event.target.length, event.target.size, 'length repeats size, as distribution does');
  return event;
}

/**
 * Events of one endpoint arrive in the order they were recorded: once a pull
 * made now has arrived, so has every event recorded before it. Counts taken
 * after this are final, not "so far".
 */
async function barrier(rx: Receiver, m: TestMirror, cached: PushedBlob, repo = 'notify/raw'): Promise<void> {
  const res = await request(`${m.url}/v2/${repo}/blobs/${cached.digest}`);
  await res.body.dump();
  assert.equal(res.statusCode, 200);
  const id = res.headers['x-request-id'];
  assert.equal(typeof id, 'string');
  await rx.waitForEvents('the barrier pull', (evs) => evs.some((e) => e.action === 'pull' && e.request?.id === id), 20_000, { path: PATH, acknowledged: true });
}

/** Every request was a v2 envelope POSTed to the endpoint, with its event count. */
function assertWire(rx: Receiver): void {
  for (const r of rx.requests({ path: PATH })) {
    assert.equal(r.method, 'POST');
    assert.equal(r.headers['content-type'], EVENTS_MEDIA_TYPES.v2);
    const events = (JSON.parse(r.body) as { events: unknown[] }).events;
    assert.equal(r.headers['stevedore-event-count'], String(events.length));
  }
}

async function pullBlob(m: TestMirror, blob: PushedBlob): Promise<void> {
  assert.equal((await streamDigest(`${m.url}/v2/notify/raw/blobs/${blob.digest}`)).digest, blob.digest);
  await m.stevedore.mirror.fills.drain(10_000);
}

const blobFile = (dir: string, digest: string): string => join(dir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

function flipByte(file: string, at: number): void {
  const fd = openSync(file, 'r+');
  const byte = Buffer.alloc(1);
  readSync(fd, byte, 0, 1, at);
  byte[0] = byte[0]! ^ 0xff;
  writeSync(fd, byte, 0, 1, at);
  closeSync(fd);
}

async function postJson(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
}

test('fill.completed: a blob and a manifest fetched upstream, with the endpoint, bytes and duration; a hit fills nothing', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx);
  const blob = blobs.fill!;
  await pullBlob(m, blob);
  assert.equal((await get(`${m.url}/v2/notify/app/manifests/v1`, { accept: ALL })).status, 200);
  const filled = await eventOf(rx, 'fill.completed', blob.digest);
  assert.deepEqual({ digest: filled.target?.digest, size: filled.target?.size, repository: filled.target?.repository }, { digest: blob.digest, size: blob.size, repository: 'notify/raw' });
  const d = filled.stevedore!;
  assert.deepEqual({ upstream: d.upstream, endpoint: d.endpoint, bytes: d.bytes }, { upstream: 'docker.io', endpoint: hub.url, bytes: blob.size });
  assert.ok(typeof d.durationMs === 'number' && d.durationMs >= 0, `durationMs ${String(d.durationMs)}`);
  const manifest = await eventOf(rx, 'fill.completed', image.manifestDigest);
  assert.deepEqual(
    { mediaType: manifest.target?.mediaType, size: manifest.target?.size, repository: manifest.target?.repository, tag: manifest.target?.tag },
    { mediaType: image.manifestMediaType, size: image.manifestBytes.length, repository: 'notify/app', tag: 'v1' },
  );
  assert.deepEqual({ upstream: manifest.stevedore?.upstream, endpoint: manifest.stevedore?.endpoint, bytes: manifest.stevedore?.bytes }, { upstream: 'docker.io', endpoint: hub.url, bytes: image.manifestBytes.length });
  await barrier(rx, m, blob); // a hit
  assert.equal(ofAction(rx, 'fill.completed', blob.digest).length, 1, 'one fill, however often it is pulled');
  assert.equal(ofAction(rx, 'fill.failed').length, 0);
  assertWire(rx);
});

test('the envelope names the mirror that sent it: source.addr is its host name and the port it listens on', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx);
  await pullBlob(m, blobs.fill!);
  const filled = await eventOf(rx, 'fill.completed', blobs.fill!.digest);
  assert.equal(filled.source?.addr, `${hostname()}:${new URL(m.url).port}`, 'the bound port (listen 127.0.0.1:0 here), not the configured one');
});

test('digest.mismatch and fill.failed: upstream bytes that do not hash to the digest asked for; the retry fills', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx);
  const blob = blobs.corrupt!;
  hub.corruptBlob(blob.digest);
  try {
    await assert.rejects(async () => {
      const res = await request(`${m.url}/v2/notify/raw/blobs/${blob.digest}`);
      for await (const chunk of res.body) void chunk;
    }, 'the client never gets a complete body');
    const mismatch = await eventOf(rx, 'digest.mismatch', blob.digest);
    assert.equal(mismatch.target?.repository, 'notify/raw');
    assert.deepEqual({ upstream: mismatch.stevedore?.upstream, endpoint: mismatch.stevedore?.endpoint, bytes: mismatch.stevedore?.bytes }, { upstream: 'docker.io', endpoint: hub.url, bytes: blob.size });
    const failed = await eventOf(rx, 'fill.failed', blob.digest);
    assert.deepEqual({ upstream: failed.stevedore?.upstream, endpoint: failed.stevedore?.endpoint, bytes: failed.stevedore?.bytes }, { upstream: 'docker.io', endpoint: hub.url, bytes: blob.size });
    assert.match(String(failed.stevedore?.reason), /digest|hash/i);
  } finally {
    hub.clearFaults();
  }
  await pullBlob(m, blob);
  await eventOf(rx, 'fill.completed', blob.digest);
  await barrier(rx, m, blob);
  assert.deepEqual(['digest.mismatch', 'fill.failed', 'fill.completed'].map((a) => ofAction(rx, a, blob.digest).length), [1, 1, 1]);
  assertWire(rx);
});

test('upstream.circuit.open when the endpoint stops answering, upstream.circuit.close when it answers again', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx, { health: { failureThreshold: 1, openMin: '300ms', openMax: '1s' } });
  await hub.down('refuse');
  try {
    assert.ok((await get(`${m.url}/v2/notify/app/manifests/v1`, { accept: ALL })).status >= 500);
    const open = await eventOf(rx, 'upstream.circuit.open');
    assert.deepEqual({ upstream: open.stevedore?.upstream, endpoint: open.stevedore?.endpoint, failures: open.stevedore?.failures }, { upstream: 'docker.io', endpoint: hub.url, failures: 1 });
    assert.ok(typeof open.stevedore?.reason === 'string' && open.stevedore.reason.length > 0, 'why it opened');
  } finally {
    await hub.up();
  }
  // The first request after openMin is the trial that closes it.
  await waitForAsync('the endpoint to serve again', async () => (await get(`${m.url}/v2/notify/app/manifests/v1`, { accept: ALL })).status === 200, 15_000);
  const close = await eventOf(rx, 'upstream.circuit.close');
  assert.deepEqual({ upstream: close.stevedore?.upstream, endpoint: close.stevedore?.endpoint }, { upstream: 'docker.io', endpoint: hub.url });
  assert.ok(typeof close.stevedore?.downMs === 'number' && close.stevedore.downMs >= 300, `downMs ${String(close.stevedore?.downMs)} covers openMin`);
  const actions = delivered(rx).map((e) => e.action).filter((a) => a.startsWith('upstream.circuit.'));
  assert.deepEqual(actions, ['upstream.circuit.open', 'upstream.circuit.close'], 'one of each, in order');
  assertWire(rx);
});

test('upstream.ratelimit.low: the budget in the headers falls under warnBelow; a configured account is "configured", never its name', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx, { upstreams: [{ registry: 'docker.io', url: hub.url, settings: { rateLimit: { warnBelow: 10, minRemaining: 0 } } }] });
  hub.setRateLimitRemaining(5);
  try {
    assert.equal((await get(`${m.url}/v2/notify/app/manifests/v1`, { accept: ALL })).status, 200);
  } finally {
    hub.setRateLimitRemaining(100);
  }
  const low = await eventOf(rx, 'upstream.ratelimit.low');
  assert.deepEqual(
    { ...low.stevedore },
    { upstream: 'docker.io', endpoint: hub.url, credential: 'anonymous', remaining: 4, limit: 100, windowSeconds: 21_600 },
  );

  const account = { username: 'notify-bot', password: 'notify-bot-pw' };
  const privateHub = await startHubDouble({ upstream: registry.url, credentials: account, rateLimit: 8 });
  t.after(() => privateHub.stop());
  const rx2 = await receiver(t);
  const m2 = await mirror(t, rx2, { upstreams: [{ registry: 'docker.io', url: privateHub.url, ...account, settings: { rateLimit: { warnBelow: 10, minRemaining: 0 } } }] });
  assert.equal((await get(`${m2.url}/v2/notify/app/manifests/v1`, { accept: ALL })).status, 200);
  const configured = await eventOf(rx2, 'upstream.ratelimit.low');
  assert.deepEqual({ credential: configured.stevedore?.credential, remaining: configured.stevedore?.remaining, limit: configured.stevedore?.limit }, { credential: 'configured', remaining: 7, limit: 8 });
  assert.ok(rx2.requests().every((r) => !r.body.includes(account.username) && !r.body.includes(account.password)), 'neither the user nor the password is in an event');
  assertWire(rx);
  assertWire(rx2);
});

test('cache.evicted (quota): growing past cache.maxSize sweeps the least recently used blob', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx, { cache: { maxSize: '1MiB', lowWater: 0.9 } });
  const [older, newer] = [blobs.quotaA!, blobs.quotaB!];
  await pullBlob(m, older);
  await pullBlob(m, newer); // 1.4 MiB now: the sweep the growth starts takes the older one
  const evicted = await eventOf(rx, 'cache.evicted', older.digest);
  assert.deepEqual({ size: evicted.target?.size, reason: evicted.stevedore?.reason }, { size: older.size, reason: 'quota' });
  await barrier(rx, m, newer);
  assert.deepEqual(ofAction(rx, 'cache.evicted').map((e) => e.target?.digest), [older.digest], 'only the one that went');
  assert.equal(m.stevedore.cache.lookupBlob(parseDigest(older.digest)), undefined, 'and it is gone');
  assertWire(rx);
});

test('cache.evicted (idle): a blob not pulled for blobIdleTtl goes at the next sweep (POST /api/gc)', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx, { cache: { blobIdleTtl: '1s' } });
  const blob = blobs.idle!;
  await pullBlob(m, blob);
  await waitForAsync('a sweep to take the idle blob', async () => {
    const res = await postJson(`${m.url}/api/gc`, {});
    assert.equal(res.status, 200);
    return (res.json.removed as { digest: string }[]).some((r) => r.digest === blob.digest);
  }, 15_000);
  const evicted = await eventOf(rx, 'cache.evicted', blob.digest);
  assert.deepEqual({ size: evicted.target?.size, reason: evicted.stevedore?.reason }, { size: blob.size, reason: 'idle' });
  assertWire(rx);
});

test('cache.gc: one event per unreferenced blob collected; the layers of a cached image stay', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx, { cache: { gcGrace: '0s' } });
  assert.equal((await get(`${m.url}/v2/notify/app/manifests/v1`, { accept: ALL })).status, 200);
  for (const digest of [image.configDigest, ...image.layers.map((l) => l.digest)]) {
    assert.equal((await streamDigest(`${m.url}/v2/notify/app/blobs/${digest}`)).digest, digest);
  }
  const loose = [blobs.gcA!, blobs.gcB!];
  for (const blob of loose) await pullBlob(m, blob);
  const removed: { digest: string; reason: string }[] = [];
  await waitForAsync('GC to collect both loose blobs', async () => {
    const res = await postJson(`${m.url}/api/gc`, {});
    assert.equal(res.status, 200);
    removed.push(...(res.json.removed as { digest: string; reason: string }[]));
    return loose.every((b) => removed.some((r) => r.digest === b.digest));
  }, 15_000);
  assert.deepEqual(removed.map((r) => `${r.digest} ${r.reason}`).sort(), loose.map((b) => `${b.digest} unreferenced`).sort(), 'the image blobs are referenced');
  for (const blob of loose) {
    const gc = await eventOf(rx, 'cache.gc', blob.digest);
    assert.deepEqual({ size: gc.target?.size, reason: gc.stevedore?.reason }, { size: blob.size, reason: 'unreferenced' });
  }
  await barrier(rx, m, image.layers[0]!, 'notify/app');
  assert.deepEqual(ofAction(rx, 'cache.gc').map((e) => e.target?.digest).sort(), loose.map((b) => b.digest).sort(), 'one per blob removed');
  assert.equal(ofAction(rx, 'cache.evicted').length, 0);
  assertWire(rx);
});

test('warmup.completed and warmup.failed (POST /api/warm): the run totals, as the job history has them', async (t) => {
  const rx = await receiver(t);
  const m = await mirror(t, rx);
  const start = async (name: string, images: string[]): Promise<number> => {
    const res = await postJson(`${m.url}/api/warm`, { name, images });
    assert.equal(res.status, 202);
    return res.json.id as number;
  };
  const goodId = await start('notify-good', ['notify/app:v1']);
  const good = await eventOf(rx, 'warmup.completed');
  const mixedId = await start('notify-mixed', ['notify/app:v1', 'notify/missing:v1']);
  const failed = await eventOf(rx, 'warmup.failed');
  const run = async (id: number): Promise<JobRun> => JSON.parse((await get(`${m.url}/api/jobs/${id}`)).body.toString('utf8')) as JobRun;
  for (const [event, id, name] of [[good, goodId, 'notify-good'], [failed, mixedId, 'notify-mixed']] as const) {
    const r = await run(id);
    const d = event.stevedore!;
    assert.deepEqual(
      { job: d.job, trigger: d.trigger, images: d.images, blobsFetched: d.blobsFetched, blobsSkipped: d.blobsSkipped, bytes: d.bytes, errors: d.errors, firstError: d.firstError },
      { job: name, trigger: 'api', images: r.images, blobsFetched: r.blobsFetched, blobsSkipped: r.blobsSkipped, bytes: r.bytes, errors: r.errors.length, firstError: r.errors[0] },
    );
    assert.ok(typeof d.durationMs === 'number' && d.durationMs >= 0);
  }
  assert.deepEqual({ fetched: good.stevedore?.blobsFetched, errors: good.stevedore?.errors }, { fetched: image.layers.length + 1, errors: 0 });
  assert.deepEqual({ images: failed.stevedore?.images, skipped: failed.stevedore?.blobsSkipped, errors: failed.stevedore?.errors }, { images: 1, skipped: image.layers.length + 1, errors: 1 });
  assert.match(String(failed.stevedore?.firstError), /notify\/missing/);
  assert.deepEqual(['warmup.completed', 'warmup.failed'].map((a) => ofAction(rx, a).length), [1, 1]);
  assertWire(rx);
});

test('verify.damaged: a damaged file caught when served (source serve), and by `stevedore verify --repair` (source verify)', async (t) => {
  const rx = await receiver(t);
  const dir = join(scratch, 'damaged');
  const [small, large, verified] = [blobs.serveSmall!, blobs.serveLarge!, blobs.verify!];
  const first = await mirror(null, rx, { dir });
  try {
    for (const blob of [small, large, verified]) await pullBlob(first, blob);
  } finally {
    await first.stop(); // the files are on disk; a new process has verified none of them
  }
  for (const blob of [small, large, verified]) flipByte(blobFile(dir, blob.digest), 1000);
  const m = await mirror(t, rx, { dir });
  // Small blobs are read whole and hashed before sending: the damaged copy goes and the client gets a fresh one.
  await pullBlob(m, small);
  // Larger ones stream while they are hashed: the client's transfer is cut, the file removed.
  await assert.rejects(async () => {
    const res = await request(`${m.url}/v2/notify/raw/blobs/${large.digest}`);
    for await (const chunk of res.body) void chunk;
  }, 'a damaged file is never served whole');
  for (const blob of [small, large]) {
    const onServe = await eventOf(rx, 'verify.damaged', blob.digest);
    assert.deepEqual({ removed: onServe.stevedore?.removed, source: onServe.stevedore?.source }, { removed: true, source: 'serve' });
    assert.ok(typeof onServe.stevedore?.reason === 'string' && onServe.stevedore.reason.length > 0);
  }

  // The CLI beside the running server: it records the event, the server delivers it.
  const configFile = join(scratch, 'verify.yml');
  writeFileSync(configFile, stringify({ instanceId: INSTANCE, cache: { dir }, upstreams: [{ registry: 'docker.io', endpoints: [{ url: hub.url }] }], notifications: notifications(rx) }));
  const repaired = await runCli(['verify', '--repair', '--config', configFile]);
  assert.equal(repaired.code, 0, repaired.stderr);
  assert.match(repaired.stdout, new RegExp(`damaged ${verified.digest}`));
  const onVerify = await eventOf(rx, 'verify.damaged', verified.digest);
  assert.deepEqual({ removed: onVerify.stevedore?.removed, source: onVerify.stevedore?.source }, { removed: true, source: 'verify' });
  assert.match(String(onVerify.stevedore?.reason), /hashes to sha256:/);
  await pullBlob(m, large); // fetched again
  await barrier(rx, m, large);
  assert.deepEqual(ofAction(rx, 'verify.damaged').map((e) => e.target?.digest), [small.digest, large.digest, verified.digest], 'one event per damaged file');
  assertWire(rx);
});
