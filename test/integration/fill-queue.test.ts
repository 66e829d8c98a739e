// The fill queue cannot be taken over by one client: new fills per client
// address are capped, the queue per registry is bounded, and a queued fill
// whose clients all left is dropped before it costs an upstream request.
// Clients come from distinct loopback addresses (127.0.0.2, .3, …), which
// Linux routes to lo, so per-address limits see them as different machines.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { pullImage } from '../support/pull-client.js';
import { waitFor } from '../support/wait.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
let seed: StandardSeed;
const PER_CLIENT = 4;

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirror({
    upstreams: [
      { registry: 'docker.io', url: hub.url, settings: { maxConcurrentFetches: 8 } },
      // One slot and three places in the queue, to watch the queue itself.
      { registry: 'queue.example', url: hub.url, settings: { maxConcurrentFetches: 1, maxQueuedFetches: 3 } },
    ],
    extra: { limits: { maxFillsPerClient: PER_CLIENT } },
  });
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

const fakeDigest = (): string => `sha256:${randomBytes(32).toString('hex')}`;
const from = (address: string): Agent => new Agent({ localAddress: address, connections: 64 });
const fills = (registry: string): { running: number; waiting: number } => mirror.stevedore.mirror.upstreams().find((u) => u.registry === registry)!.fills;

/** A blob GET whose answer (status, Retry-After, error code) is read, or whose failure is recorded. */
async function blobGet(agent: Agent, path: string): Promise<{ status: number; retryAfter?: string; code?: string } | { failed: true }> {
  try {
    const res = await request(`${mirror.url}${path}`, { dispatcher: agent, headersTimeout: 0, bodyTimeout: 0 });
    const text = await res.body.text();
    const code = res.statusCode >= 400 ? (JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code : undefined;
    return { status: res.statusCode, ...(typeof res.headers['retry-after'] === 'string' ? { retryAfter: res.headers['retry-after'] } : {}), ...(code ? { code } : {}) };
  } catch {
    return { failed: true };
  }
}

test('one client asking for 1,000 uncached blobs on a stalled upstream holds at most its share; another client pulls cold meanwhile', async () => {
  const attacker = from('127.0.0.2');
  const digests = Array.from({ length: 1000 }, fakeDigest);
  const stalled = hub.hold((r) => r.kind === 'blobGet' && digests.some((d) => r.path.endsWith(d)));
  hub.resetStats();
  try {
    const settled: Awaited<ReturnType<typeof blobGet>>[] = [];
    for (const d of digests) void blobGet(attacker, `/v2/library/big/blobs/${d}`).then((a) => settled.push(a));
    await waitFor('every request but the stalled ones to be answered', () => settled.length === digests.length - PER_CLIENT, 60_000);
    assert.equal(stalled.waiting, PER_CLIENT, 'the attacker holds its share of the upstream and no more');
    for (const answer of settled) assert.deepEqual(answer, { status: 429, retryAfter: '1', code: 'TOOMANYREQUESTS' });
    assert.deepEqual(fills('docker.io'), { running: PER_CLIENT, waiting: 0 });
    // The attacker leaves; its fills are running (stalled upstream), so they stay.
    await attacker.destroy();

    const victim = from('127.0.0.3');
    const started = performance.now();
    const pulled = await pullImage({ mirrorUrl: mirror.url, dispatcher: victim, form: 'dockerd' }, { repo: 'library/alpine', tag: '3.19', expectDigest: seed.alpine.manifestDigest });
    const ms = Math.round(performance.now() - started);
    await victim.close();
    assert.equal(pulled.blobs, 1 + seed.alpine.layers.length);
    assert.equal(stalled.waiting, PER_CLIENT, 'the victim pulled while every fill the attacker started was still stalled upstream');
    const blobGets = hub.stats().requests.filter((r) => r.kind === 'blobGet');
    assert.equal(blobGets.filter((r) => digests.some((d) => r.path.endsWith(d))).length, PER_CLIENT, 'the attacker reached the upstream for its share only');
    assert.equal(blobGets.filter((r) => r.path.startsWith('/v2/library/alpine/')).length, 1 + seed.alpine.layers.length);
    console.log(`# cold pull of library/alpine (${pulled.bytes} bytes) by a second client during the attack: ${ms} ms`);
  } finally {
    stalled.release();
  }
  await waitFor('the attacker fills to end', () => fills('docker.io').running === 0);
});

test('the queue per registry is bounded: beyond maxQueuedFetches a new fill gets 429 with Retry-After', async () => {
  const digests = Array.from({ length: 4 }, fakeDigest);
  const stalled = hub.hold((r) => r.kind === 'blobGet' && digests.some((d) => r.path.endsWith(d)));
  const first = from('127.0.0.4');
  try {
    const waiting = digests.map((d) => blobGet(first, `/v2/queue.example/acme/app/blobs/${d}`));
    await waitFor('one running fill and three queued', () => fills('queue.example').running === 1 && fills('queue.example').waiting === 3);
    const other = from('127.0.0.5');
    const over = await blobGet(other, `/v2/queue.example/acme/app/blobs/${fakeDigest()}`);
    await other.close();
    assert.deepEqual(over, { status: 429, retryAfter: '5', code: 'TOOMANYREQUESTS' });
    stalled.release();
    for (const answer of await Promise.all(waiting)) assert.ok('status' in answer && answer.status === 404);
  } finally {
    stalled.release();
    await first.close();
  }
});

test('a queued fill whose clients all left is dropped and never reaches the upstream; the running one finishes', async () => {
  const digests = Array.from({ length: 4 }, fakeDigest);
  const stalled = hub.hold((r) => r.kind === 'blobGet' && digests.some((d) => r.path.endsWith(d)));
  hub.resetStats();
  const client = from('127.0.0.6');
  try {
    const answers = digests.map((d) => blobGet(client, `/v2/queue.example/acme/app/blobs/${d}`));
    await waitFor('one running fill and three queued', () => fills('queue.example').running === 1 && fills('queue.example').waiting === 3);
    await client.destroy();
    await Promise.all(answers);
    await waitFor('the queue to empty', () => fills('queue.example').waiting === 0);
    assert.equal(fills('queue.example').running, 1, 'the running fill goes on without its client');
  } finally {
    stalled.release();
  }
  await waitFor('the running fill to end', () => fills('queue.example').running === 0);
  const upstreamGets = hub.stats().requests.filter((r) => r.kind === 'blobGet');
  assert.equal(upstreamGets.length, 1, 'only the fill that had a slot asked the upstream');
  const dropped = mirror.logs().filter((l) => l.msg === 'queued blob fill dropped: no client waits for it any more' && digests.includes(String(l.digest)));
  assert.equal(dropped.length, 3);
});
