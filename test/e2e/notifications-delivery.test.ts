// Notification delivery under failure, with Stevedore and the webhook
// receiver as real processes: a receiver that is down then back, a kill -9
// of Stevedore with events pending, a receiver that hangs, and a full outbox.
// Each outage test reports generated / delivered / retried / lost counts.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { deterministicBytes, pushBlob, type PushedBlob } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';
import { waitForAsync } from '../support/wait.js';
import { dedupeEvents, startReceiver, type Receiver, type WireEvent } from '../support/webhook-receiver.js';

const REPO = 'team/notify-delivery';
const INSTANCE = 'notify-delivery';

interface EndpointStatus { name: string; state: string; pending: number; delivered: number; failedAttempts: number; dropped: number; consecutiveFailures: number }
interface Status { recorded: number; endpoints: EndpointStatus[] }

let registry: RegistryHandle;
let hub: HubDouble;
let blobs: PushedBlob[];
const work = mkdtempSync(join(tmpdir(), 'stevedore-notify-delivery-'));
/** Everything a test started, stopped in reverse order whatever happens. */
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  registry = await startRegistry();
  blobs = [];
  for (let i = 0; i < 12; i++) blobs.push(await pushBlob(registry.url, REPO, deterministicBytes(4_000 + i * 100, `notify-delivery-${i}`)));
  hub = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function cleanup(): Promise<void> {
  for (const stop of cleanups.splice(0).reverse()) await stop().catch(() => undefined);
}

const endpoint = (name: string, url: string, more: Record<string, unknown> = {}): Record<string, unknown> => ({
  name,
  url,
  allow: ['127.0.0.1'],
  timeout: '2s',
  threshold: 2,
  backoff: '200ms',
  maxBackoff: '1s',
  batch: { maxEvents: 3, maxWait: '100ms' },
  ...more,
});

async function mirrorWith(notifications: Record<string, unknown> | undefined, dir?: string): Promise<MirrorProcess> {
  const m = await startMirrorProcess({
    port: await freePort(),
    instanceId: INSTANCE,
    upstreams: [{ registry: 'docker.io', url: hub.url }],
    ...(dir ? { dir } : {}),
    extra: notifications ? { notifications } : {},
  });
  cleanups.push(() => m.stop());
  return m;
}

async function receiver(port: number, recordFile: string, mode?: number | 'hang'): Promise<Receiver> {
  const rx = await startReceiver({ port, recordFile, mode });
  cleanups.push(() => rx.stop());
  return rx;
}

async function status(m: MirrorProcess): Promise<Status> {
  const res = await get(`${m.url}/api/notifications`);
  assert.equal(res.status, 200, `/api/notifications answered ${res.status}`);
  return JSON.parse(res.body.toString('utf8')) as Status;
}

const endpointOf = (s: Status, name: string): EndpointStatus => {
  const e = s.endpoints.find((x) => x.name === name);
  assert.ok(e, `endpoint ${name} in ${JSON.stringify(s)}`);
  return e;
};

async function metric(m: MirrorProcess, name: string, endpointName: string): Promise<number | undefined> {
  const text = (await get(`${m.url}/metrics`)).body.toString('utf8');
  const line = text.split('\n').find((l) => l.startsWith(`${name}{endpoint="${endpointName}"} `));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

/** Pulls blobs one after the other (each a miss: a pull and a fill.completed), checking every digest. */
async function pullBlobs(m: MirrorProcess, which: readonly PushedBlob[]): Promise<number[]> {
  const times: number[] = [];
  for (const b of which) {
    const started = performance.now();
    const got = await streamDigest(`${m.url}/v2/${REPO}/blobs/${b.digest}`);
    times.push(performance.now() - started);
    assert.equal(got.status, 200);
    assert.equal(got.digest, b.digest);
  }
  return times;
}

/**
 * The order an endpoint must deliver sequential pulls in: the pull events in the order of the pulls
 * (each is recorded as its response ends, before the next pull starts), every event in the order it
 * was recorded (timestamps never go back). A fill.completed is recorded when the blob is stored,
 * which may be after the client has it, so fills are checked as a set.
 */
function assertPullOrder(unique: WireEvent[], pulled: readonly PushedBlob[], withFills: boolean, where: string): void {
  assert.deepEqual(
    unique.filter((e) => e.action === 'pull').map((e) => e.target?.digest),
    pulled.map((b) => b.digest),
    `${where}: pull events in the order of the pulls`,
  );
  assert.deepEqual(
    unique.filter((e) => e.action === 'fill.completed').map((e) => e.target?.digest).sort(),
    withFills ? pulled.map((b) => b.digest).sort() : [],
    `${where}: ${withFills ? 'a fill.completed per blob' : 'no fill events'}`,
  );
  const times = unique.map((e) => Date.parse(e.timestamp));
  assert.ok(times.every((t, i) => i === 0 || t >= times[i - 1]!), `${where}: events arrive in the order they were recorded (timestamps never go back): ${unique.map((e) => `${e.action}@${e.timestamp}`).join(' ')}`);
}

function report(t: TestContext, what: string, counts: { generated: number; delivered: number; received: number; repeats: number; retried: number; lost: number; dropped?: number }): void {
  t.diagnostic(`${what}: generated=${counts.generated} delivered=${counts.delivered} received-unique=${counts.received} duplicates=${counts.repeats} retried(failed attempts)=${counts.retried} lost=${counts.lost}${counts.dropped === undefined ? '' : ` dropped=${counts.dropped}`}`);
}

test('the receiver down, then failing, then back: every event arrives, in recorded order per endpoint, repeats only as repeated ids', { timeout: 120_000 }, async (t) => {
  try {
    const port = await freePort();
    const recordFile = join(work, 'outage.jsonl');
    const m = await mirrorWith({
      endpoints: [endpoint('all', `http://127.0.0.1:${port}/all`), endpoint('pulls', `http://127.0.0.1:${port}/pulls`, { ignore: { actions: ['fill.*'] } })],
    });
    const pulled = blobs.slice(0, 8);
    await pullBlobs(m, pulled);
    const generated = pulled.length * 2;
    await waitForAsync(`${generated} events pending for 'all' and ${pulled.length} for 'pulls', with failed attempts`, async () => {
      const s = await status(m);
      const all = endpointOf(s, 'all');
      const pulls = endpointOf(s, 'pulls');
      return s.recorded === generated && all.pending === generated && pulls.pending === pulled.length && all.failedAttempts > 0 && pulls.failedAttempts > 0;
    }, 20_000);
    assert.equal(await metric(m, 'stevedore_notifications_pending', 'all'), generated);
    assert.ok(((await metric(m, 'stevedore_notifications_failed_total', 'all')) ?? 0) > 0);
    const down = await status(m);

    // Back, but failing for a while: what it records then comes again, under the same ids.
    const rx = await receiver(port, recordFile, 500);
    await waitForAsync('two failed batches recorded per endpoint', async () => rx.requests({ path: '/all' }).length >= 2 && rx.requests({ path: '/pulls' }).length >= 2, 20_000);
    await rx.setMode(200);
    await rx.waitForEvents('every event at /all', (evs) => new Set(evs.map((e) => e.id)).size >= generated, 30_000, { path: '/all' });
    await rx.waitForEvents('every event at /pulls', (evs) => new Set(evs.map((e) => e.id)).size >= pulled.length, 30_000, { path: '/pulls' });
    await waitForAsync('nothing pending', async () => (await status(m)).endpoints.every((e) => e.pending === 0), 10_000);
    const s = await status(m);

    const all = dedupeEvents(rx.events({ path: '/all' }));
    const pulls = dedupeEvents(rx.events({ path: '/pulls' }));
    assert.equal(all.unique.length, generated, 'no event more, none less at /all');
    assert.equal(pulls.unique.length, pulled.length, 'no event more, none less at /pulls');
    assertPullOrder(all.unique, pulled, true, '/all');
    assertPullOrder(pulls.unique, pulled, false, '/pulls');
    assert.deepEqual(pulls.unique.map((e) => e.id), all.unique.filter((e) => e.action === 'pull').map((e) => e.id), 'both endpoints got the same pull events (same ids)');
    assert.ok(all.repeats > 0 && pulls.repeats > 0, 'the batches answered 500 were sent again');
    for (const path of ['/all', '/pulls']) {
      const acked = dedupeEvents(rx.events({ path, acknowledged: true }));
      assert.equal(acked.repeats, 0, `${path}: nothing answered 2xx was sent again`);
      assert.equal(acked.unique.length, path === '/all' ? generated : pulled.length, `${path}: every event was acknowledged once`);
    }
    assert.ok(all.unique.every((e) => e.source?.instanceID === INSTANCE));
    assert.equal(endpointOf(s, 'all').delivered, generated);
    assert.equal(endpointOf(s, 'pulls').delivered, pulled.length);
    for (const r of rx.requests()) assert.ok(Number(r.headers['stevedore-event-count']) <= 3, 'batches of at most batch.maxEvents');
    const lost = generated - all.unique.length;
    assert.equal(lost, 0);
    report(t, "outage, endpoint 'all'", { generated, delivered: endpointOf(s, 'all').delivered, received: all.unique.length, repeats: all.repeats, retried: endpointOf(s, 'all').failedAttempts, lost });
    report(t, "outage, endpoint 'pulls'", { generated: pulled.length, delivered: endpointOf(s, 'pulls').delivered, received: pulls.unique.length, repeats: pulls.repeats, retried: endpointOf(s, 'pulls').failedAttempts, lost: pulled.length - pulls.unique.length });
    t.diagnostic(`while down: ${JSON.stringify(down.endpoints)}`);
  } finally {
    await cleanup();
  }
});

test('kill -9 of Stevedore with events pending, then a restart on the same cache: every pending event arrives', { timeout: 120_000 }, async (t) => {
  try {
    const port = await freePort();
    const recordFile = join(work, 'crash.jsonl');
    const dir = join(work, 'crash-cache');
    const notifications = { endpoints: [endpoint('crash', `http://127.0.0.1:${port}/events`)] };
    const first = await mirrorWith(notifications, dir);
    const pulled = blobs.slice(0, 8);
    await pullBlobs(first, pulled);
    const generated = pulled.length * 2;
    await waitForAsync(`${generated} events pending`, async () => {
      const e = endpointOf(await status(first), 'crash');
      return e.pending === generated && e.failedAttempts > 0;
    }, 20_000);
    const before = endpointOf(await status(first), 'crash');
    process.kill(first.pid, 'SIGKILL');
    await first.exited;

    const rx = await receiver(port, recordFile);
    const second = await mirrorWith(notifications, dir);
    await rx.waitForEvents(`all ${generated} events after the restart`, (evs) => new Set(evs.map((e) => e.id)).size >= generated, 30_000);
    await waitForAsync('nothing pending', async () => endpointOf(await status(second), 'crash').pending === 0, 10_000);
    const after = await status(second);
    const got = dedupeEvents(rx.events());
    assert.equal(got.unique.length, generated, 'exactly the events recorded before the kill');
    assertPullOrder(got.unique, pulled, true, 'after the restart');
    assert.ok(got.unique.every((e) => e.source?.instanceID === INSTANCE && e.stevedore?.outcome !== 'hit'), 'events of the first process (its misses)');
    assert.equal(after.recorded, 0, 'the restarted process recorded nothing of its own');
    assert.equal(endpointOf(after, 'crash').delivered, generated);
    const lost = generated - got.unique.length;
    report(t, 'kill -9', {
      generated,
      delivered: endpointOf(after, 'crash').delivered,
      received: got.unique.length,
      repeats: got.repeats,
      retried: before.failedAttempts + endpointOf(after, 'crash').failedAttempts,
      lost,
    });
  } finally {
    await cleanup();
  }
});

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

test('a hanging receiver does not slow pulls, and the other endpoint still gets every event', { timeout: 120_000 }, async (t) => {
  try {
    const pulled = blobs.slice(0, 6);
    const baseline = await mirrorWith(undefined);
    await pullBlobs(baseline, blobs.slice(6, 7)); // as the mirror with A does below: the same warm-up
    const baseCold = await pullBlobs(baseline, pulled);
    const baseWarm = await pullBlobs(baseline, pulled);
    await baseline.stop();

    const hanging = await receiver(0, join(work, 'hang-a.jsonl'), 'hang');
    const answering = await receiver(0, join(work, 'hang-b.jsonl'));
    const m = await mirrorWith({
      endpoints: [
        endpoint('a', `${hanging.url}/events`, { timeout: '2s', batch: { maxEvents: 1, maxWait: '10ms' } }),
        endpoint('b', `${answering.url}/events`),
      ],
    });
    // One pull first, so that A holds a request open before the timed pulls start.
    await pullBlobs(m, blobs.slice(6, 7));
    await waitForAsync('endpoint A to hold a request open', async () => (await hanging.openRequests()) >= 1, 10_000);
    const cold = await pullBlobs(m, pulled);
    const openAfterCold = await hanging.openRequests();
    const warm = await pullBlobs(m, pulled);
    const openAfterWarm = await hanging.openRequests();
    const aBefore = endpointOf(await status(m), 'a');

    const generated = 2 + pulled.length * 3; // the first blob and the cold ones: pull + fill; the warm ones: pull
    await answering.waitForEvents(`all ${generated} events at B`, (evs) => new Set(evs.map((e) => e.id)).size >= generated, 20_000);
    const b = dedupeEvents(answering.events());
    assert.equal(b.unique.length, generated);
    assert.equal((await status(m)).recorded, generated);
    await waitForAsync("A's failed attempts to grow", async () => endpointOf(await status(m), 'a').failedAttempts > aBefore.failedAttempts && endpointOf(await status(m), 'a').failedAttempts >= 2, 20_000);
    const a = endpointOf(await status(m), 'a');
    assert.equal(a.delivered, 0, 'nothing counts as delivered to a receiver that never answers');
    assert.ok(a.pending > 0);
    assert.ok(openAfterCold + openAfterWarm >= 1, 'A was holding a request open while the pulls ran');

    const slack = 50;
    const verdict = (what: string, base: number[], withHang: number[]): void => {
      t.diagnostic(`${what}: median ${median(withHang).toFixed(1)} ms with A hanging vs ${median(base).toFixed(1)} ms without notifications`);
      assert.ok(median(withHang) <= 3 * median(base) + slack, `${what} pulls are not slowed by the hanging endpoint`);
    };
    verdict('cold', baseCold, cold);
    verdict('warm', baseWarm, warm);
    t.diagnostic(`A: ${JSON.stringify(a)}; B received ${b.unique.length} (${b.repeats} repeats)`);
  } finally {
    await cleanup();
  }
});

test('a bounded outbox: with maxPending 5 and the receiver down, 7 of 12 events are dropped (metric, warning), and the 5 newest arrive', { timeout: 120_000 }, async (t) => {
  try {
    const port = await freePort();
    const m = await mirrorWith({ maxPending: 5, endpoints: [endpoint('small', `http://127.0.0.1:${port}/events`, { ignore: { actions: ['fill.*'] } })] });
    const pulled = blobs.slice(0, 12);
    await pullBlobs(m, pulled);
    await waitForAsync('5 pending and 7 dropped', async () => {
      const s = await status(m);
      const e = endpointOf(s, 'small');
      return s.recorded === 24 && e.pending === 5 && e.dropped === 7;
    }, 20_000);
    assert.equal(await metric(m, 'stevedore_notifications_dropped_total', 'small'), 7);
    assert.equal(await metric(m, 'stevedore_notifications_pending', 'small'), 5);
    const warnings = m
      .logs()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level?: number; msg?: string; endpoint?: string; dropped?: number })
      .filter((l) => (l.level ?? 0) >= 40 && /drop/i.test(l.msg ?? '') && l.endpoint === 'small');
    assert.ok(warnings.length >= 1, 'a warning says events were dropped');

    const rx = await receiver(port, join(work, 'bounded.jsonl'));
    await rx.waitForEvents('the 5 kept events', (evs) => new Set(evs.map((e) => e.id)).size >= 5, 20_000);
    await waitForAsync('nothing pending', async () => endpointOf(await status(m), 'small').pending === 0, 10_000);
    const got = dedupeEvents(rx.events());
    assert.deepEqual(got.unique.map((e) => `${e.action} ${e.target?.digest}`), pulled.slice(7).map((b) => `pull ${b.digest}`), 'exactly the 5 newest, in order');
    const e = endpointOf(await status(m), 'small');
    report(t, 'bounded outbox', { generated: 12, delivered: e.delivered, received: got.unique.length, repeats: got.repeats, retried: e.failedAttempts, lost: 12 - got.unique.length - e.dropped, dropped: e.dropped });
    t.diagnostic(`warnings: ${JSON.stringify(warnings)}`);
  } finally {
    await cleanup();
  }
});
