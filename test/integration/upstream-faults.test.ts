// Upstream faults injected by the Docker Hub double in front of a real registry:
// failover and circuits, deadlines, 5xx and 429, broken bodies, credentials,
// rate-limit budgets, negative caching and repository rules.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushBlob, pushImage, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, json, streamDigest, type Fetched } from '../support/http.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
const ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest].join(', ');
let registry: RegistryHandle;
let hub: HubDouble;
let hub2: HubDouble;
let app: PushedImage;
const mirrors: TestMirror[] = [];

async function mirrorWith(options: Parameters<typeof startMirror>[0]): Promise<TestMirror> {
  const m = await startMirror(options);
  mirrors.push(m);
  return m;
}

const errorOf = (f: Fetched): { code: string; message: string; detail?: unknown } | undefined => json(f).errors?.[0];
const endpointsOf = (m: TestMirror) => m.stevedore.mirror.upstreams()[0]!.endpoints;

before(async () => {
  registry = await startRegistry();
  app = await pushImage(registry.url, 'acme/app', 'v1', { layers: [2000, 3000], format: 'oci' });
  hub = await startHubDouble({ upstream: registry.url });
  hub2 = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await hub?.stop();
  await hub2?.stop();
  await registry?.stop();
});

test('connection refused: the next endpoint answers, and the dead one\'s circuit opens', async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: [dead, hub.url] }], health: { failureThreshold: 2, openMin: '1h' } });
  for (const tag of ['v1', 'v1']) {
    const res = await get(`${m.url}/v2/acme/app/manifests/${tag}?ns=docker.io`, { accept: ALL });
    assert.equal(res.status, 200);
  }
  const blob = await streamDigest(`${m.url}/v2/acme/app/blobs/${app.layers[0]!.digest}`);
  assert.equal(blob.digest, app.layers[0]!.digest);
  const [first, second] = endpointsOf(m);
  assert.equal(first?.state, 'open', 'the refused endpoint is skipped now');
  assert.match(String(first?.lastError?.message), /ECONNREFUSED/);
  assert.equal(second?.state, 'up');
  const failures = first!.consecutiveFailures;
  await get(`${m.url}/v2/acme/app/blobs/${app.layers[1]!.digest}`);
  assert.equal(endpointsOf(m)[0]!.consecutiveFailures, failures, 'an open circuit is not even tried');
  // Every endpoint down: a clear 503 that names the upstream.
  await hub.down('refuse');
  try {
    const res = await get(`${m.url}/v2/acme/app/manifests/nothere`, { accept: ALL });
    assert.equal(res.status, 503);
    assert.equal(errorOf(res)?.code, 'MANIFEST_UNKNOWN', 'an outage is told with the code of what was asked for; the status says what happened');
    assert.match(String(errorOf(res)?.detail), /upstream docker\.io unavailable/);
    assert.match(String(errorOf(res)?.detail), /circuit open/);
  } finally {
    await hub.up();
  }
});

test('active health probes mark endpoints down and back up', async () => {
  const flaky = await startHubDouble({ upstream: registry.url });
  try {
    const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: [flaky.url, hub.url] }], health: { failureThreshold: 1, openMin: '1h' } });
    await m.stevedore.probes.runOnce();
    assert.deepEqual(endpointsOf(m).map((e) => e.state), ['up', 'up']);
    await flaky.down('refuse');
    await m.stevedore.probes.runOnce();
    assert.deepEqual(endpointsOf(m).map((e) => e.state), ['open', 'up']);
    assert.match(String(endpointsOf(m)[0]!.lastError?.message), /health probe/);
    // While open, pulls go to the second endpoint only.
    flaky.resetStats();
    assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
    await flaky.up();
    // Back: the next probe closes the circuit long before openMin (an hour) would have.
    await m.stevedore.probes.runOnce();
    assert.deepEqual(endpointsOf(m).map((e) => e.state), ['up', 'up']);
    assert.equal(endpointsOf(m)[0]!.circuit, 'closed');
    flaky.resetStats();
    hub.resetStats();
    await pushImage(registry.url, 'acme/app', 'after-recovery', { layers: [100], format: 'oci' });
    assert.equal((await get(`${m.url}/v2/acme/app/manifests/after-recovery`, { accept: ALL })).status, 200);
    assert.equal(flaky.stats().manifestGet, 1, 'the recovered first endpoint serves again');
    assert.equal(hub.stats().manifestGet, 0);
  } finally {
    await flaky.stop();
  }
});

test('latency beyond the revalidation deadline: the cached tag is served stale within the deadline', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { tagTtl: '0s', revalidateTimeout: '500ms' } });
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  hub.delayNext(1, 4000, 'manifestHead');
  const started = Date.now();
  const res = await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL });
  const took = Date.now() - started;
  assert.equal(res.status, 200);
  assert.ok(res.body.equals(app.manifestBytes));
  assert.ok(took < 2000, `answered in ${took} ms, not after the upstream's 4 s`);
  assert.ok(m.logs().some((l) => l.msg === 'request' && l.cache === 'stale'));
  assert.equal(endpointsOf(m)[0]!.state, 'up', 'our own deadline is not held against the endpoint');
});

test('503 and 429 on revalidation: the cached tag is served stale', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { tagTtl: '0s' } });
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  for (const [status, headers] of [[503, {}], [429, { 'retry-after': '30' }], [429, {}]] as const) {
    hub.failNext(1, status, headers, 'manifestHead');
    const res = await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL });
    assert.equal(res.status, 200, `stale on upstream ${status}`);
    assert.ok(res.body.equals(app.manifestBytes));
  }
  await hub.down('refuse');
  try {
    const res = await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL });
    assert.equal(res.status, 200, 'stale while the upstream refuses connections');
  } finally {
    await hub.up();
  }
  assert.equal(m.logs().filter((l) => l.msg === 'request' && l.cache === 'stale').length, 4);
});

test('429 on a cold tag is passed on, with the upstream\'s Retry-After or one computed from the window', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  // One manifest GET first, so the endpoint has seen Docker Hub's ratelimit headers.
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  await pushImage(registry.url, 'acme/cold', 'a', { layers: [100], format: 'docker' });
  hub.failNext(1, 429, { 'retry-after': '42' }, 'manifestGet');
  const given = await get(`${m.url}/v2/acme/cold/manifests/a`, { accept: ALL });
  assert.equal(given.status, 429);
  assert.equal(given.headers['retry-after'], '42');
  assert.equal(errorOf(given)?.code, 'TOOMANYREQUESTS');
  hub.failNext(1, 429, {}, 'manifestGet');
  const computed = await get(`${m.url}/v2/acme/cold/manifests/a`, { accept: ALL });
  assert.equal(computed.status, 429);
  assert.equal(computed.headers['retry-after'], String(Math.ceil(21600 / 100)), 'window / limit');
  // Content already cached is served whatever the upstream says.
  hub.failNext(5, 429, {}, ['manifestGet', 'manifestHead', 'blobGet']);
  const cached = await get(`${m.url}/v2/acme/app/manifests/${app.manifestDigest}`, { accept: ALL });
  assert.equal(cached.status, 200);
  hub.clearFaults();
});

test('a body cut mid-blob resumes from the second endpoint with Range, and the digest verifies', async () => {
  const blob = await pushBlob(registry.url, 'acme/app', { size: 8 * MiB, seed: 'resume-me' });
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: [hub.url, hub2.url] }] });
  hub.resetStats();
  hub2.resetStats();
  hub.dieMidBlob(blob.digest, 3 * MiB);
  const res = await streamDigest(`${m.url}/v2/acme/app/blobs/${blob.digest}`);
  assert.equal(res.status, 200);
  assert.equal(res.bytes, blob.size);
  assert.equal(res.digest, blob.digest, 'the whole resumed blob verifies');
  assert.equal(hub.stats().blobGet, 1);
  assert.equal(hub2.stats().blobGet, 1, 'the rest came from the second endpoint');
  const resumed = m.logs().find((l) => l.msg === 'upstream blob stream broke; resuming with a Range request');
  assert.ok(resumed, 'the fill resumed');
  assert.ok(Number(resumed.bytes) >= MiB && Number(resumed.bytes) <= 3 * MiB, `resumed at ${String(resumed.bytes)}`);
  assert.ok(hub2.stats().bytesServed < blob.size, 'only the missing tail was fetched again');
  assert.match(String(endpointsOf(m)[0]!.lastError?.message), /broke at/);
});

test('a body that goes silent mid-blob is cut after timeouts.body and resumed from the second endpoint', async () => {
  const blob = await pushBlob(registry.url, 'acme/app', { size: 8 * MiB, seed: 'silent-body' });
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: [hub.url, hub2.url], timeouts: { body: '1s' } }] });
  hub.resetStats();
  hub2.resetStats();
  hub.stallMidBlob(blob.digest, 2 * MiB);
  const res = await streamDigest(`${m.url}/v2/acme/app/blobs/${blob.digest}`);
  assert.equal(res.status, 200);
  assert.equal(res.digest, blob.digest, 'the resumed blob verifies');
  assert.equal(hub.stats().blobGet, 1);
  assert.equal(hub2.stats().blobGet, 1, 'the rest came from the second endpoint');
  const resumed = m.logs().find((l) => l.msg === 'upstream blob stream broke; resuming with a Range request');
  assert.ok(resumed, 'the fill resumed');
  assert.match(String(resumed.err), /UND_ERR_BODY_TIMEOUT|Body Timeout/i, 'cut by the body-silence timeout');
  assert.ok(Number(resumed.bytes) >= MiB && Number(resumed.bytes) <= 2 * MiB, `resumed at ${String(resumed.bytes)}`);
  assert.ok(hub2.stats().bytesServed <= blob.size - MiB, 'only the missing tail was fetched again');
});

test('a per-registry tagTtl overrides the global one', async () => {
  const clock = { ms: Date.now(), now(): number { return this.ms; } };
  const m = await mirrorWith({
    upstreams: [
      { registry: 'docker.io', url: hub.url, settings: { tagTtl: '1m' } },
      { registry: 'other.example', url: hub2.url },
    ],
    cache: { tagTtl: '10m' },
    clock,
  });
  for (const path of ['/v2/acme/app/manifests/v1', '/v2/other.example/acme/app/manifests/v1']) assert.equal((await get(`${m.url}${path}`, { accept: ALL })).status, 200);
  hub.resetStats();
  hub2.resetStats();
  clock.ms += 2 * 60_000;
  for (const path of ['/v2/acme/app/manifests/v1', '/v2/other.example/acme/app/manifests/v1']) assert.equal((await get(`${m.url}${path}`, { accept: ALL })).status, 200);
  assert.equal(hub.stats().manifestHead, 1, 'docker.io (tagTtl 1m) revalidated after two minutes');
  assert.equal(hub2.stats().manifestHead + hub2.stats().manifestGet, 0, 'other.example (the global 10m) did not');
  clock.ms += 9 * 60_000;
  assert.equal((await get(`${m.url}/v2/other.example/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  assert.equal(hub2.stats().manifestHead, 1, 'and did after eleven');
});

test('wrong credentials: a clear 403 that never shows the secret', async () => {
  const locked = await startHubDouble({ upstream: registry.url, credentials: { username: 'alice', password: 'right-password' } });
  try {
    const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: locked.url, username: 'alice', password: 'wrong-s3cret-value' }] });
    const res = await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL });
    assert.equal(res.status, 403);
    assert.equal(errorOf(res)?.code, 'DENIED');
    assert.match(String(errorOf(res)?.detail), /refused the mirror's credentials/);
    assert.ok(!res.body.toString().includes('alice'), 'not even the user name reaches the client');
    assert.ok(!res.body.toString().includes('wrong-s3cret-value'));
    assert.ok(m.logs().some((l) => l.msg === 'request' && /refused the credentials of user "alice"/.test(String(l.error))), 'the operator sees who was refused');
    assert.ok(!m.rawLogs().includes('wrong-s3cret-value'), 'the password is not in the logs');
    assert.ok(!m.rawLogs().includes(Buffer.from('alice:wrong-s3cret-value').toString('base64')), 'nor its Basic encoding');
    assert.equal(endpointsOf(m)[0]!.state, 'up', 'bad credentials are not an outage');
  } finally {
    await locked.stop();
  }
});

test('rate-limit headers show up in the upstream state; a warm re-pull after tagTtl spends no manifest GET', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { tagTtl: '0s' } });
  hub.setRateLimitRemaining(80);
  hub.resetStats();
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  const state = endpointsOf(m)[0]!;
  assert.equal(state.manifestGets, 1);
  assert.equal(state.credential, 'anonymous');
  assert.equal(state.rateLimit?.limit, 100);
  assert.equal(state.rateLimit?.windowSeconds, 21600);
  assert.equal(state.rateLimit?.remaining, 79);
  assert.equal(state.rateLimit?.source, '127.0.0.1');
  assert.ok(Date.now() - (state.rateLimit?.observedAt ?? 0) < 10_000);
  for (let i = 0; i < 3; i++) assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  assert.equal(endpointsOf(m)[0]!.manifestGets, 1, 'revalidation spent no manifest GET');
  assert.equal(hub.stats().manifestGet, 1);
  assert.equal(hub.stats().manifestHead, 3, 'HEAD only');
});

test('a low pull budget: a warning, cached tags served without revalidation, missing content still fetched', async () => {
  const m = await mirrorWith({
    upstreams: [{ registry: 'docker.io', url: hub.url, settings: { rateLimit: { warnBelow: 10, minRemaining: 5 } } }],
    cache: { tagTtl: '0s' },
  });
  hub.setRateLimitRemaining(4);
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  assert.ok(m.logs().some((l) => l.msg === 'upstream pull budget is running low' && l.remaining === 3));
  hub.resetStats();
  const again = await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL });
  assert.equal(again.status, 200);
  assert.equal(hub.stats().manifestHead + hub.stats().manifestGet, 0, 'not revalidated');
  await pushImage(registry.url, 'acme/fresh', 'x', { layers: [100], format: 'docker' });
  assert.equal((await get(`${m.url}/v2/acme/fresh/manifests/x`, { accept: ALL })).status, 200, 'missing content is still fetched');
  assert.equal(hub.stats().manifestGet, 1);
  hub.setRateLimitRemaining(100);
});

test('an upstream 404 is remembered for notFoundTtl', async () => {
  const clock = { ms: Date.now(), now(): number { return this.ms; } };
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { notFoundTtl: '30s' }, clock });
  hub.resetStats();
  for (let i = 0; i < 3; i++) {
    const res = await get(`${m.url}/v2/acme/app/manifests/missing`, { accept: ALL });
    assert.equal(res.status, 404);
    assert.equal(errorOf(res)?.code, 'MANIFEST_UNKNOWN');
  }
  assert.equal(hub.stats().manifestGet, 1, 'asked upstream once');
  assert.equal(m.logs().filter((l) => l.msg === 'request' && l.cache === 'notfound_cached').length, 2);
  await pushImage(registry.url, 'acme/app', 'missing', { layers: [100], format: 'docker' });
  clock.ms += 29_000;
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/missing`, { accept: ALL })).status, 404, 'still remembered within the TTL');
  assert.equal(hub.stats().manifestGet, 1);
  clock.ms += 1_001;
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/missing`, { accept: ALL })).status, 200, 'found once the TTL passed');
});

test('allow and deny patterns decide which repositories may be pulled', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url, settings: { allow: ['acme/*', 'library/**'], deny: ['acme/secret*'] } }] });
  assert.equal((await get(`${m.url}/v2/acme/app/manifests/v1`, { accept: ALL })).status, 200);
  for (const repo of ['acme/secret-stuff', 'other/app', 'acme/deep/er']) {
    const res = await get(`${m.url}/v2/${repo}/manifests/v1`, { accept: ALL });
    assert.equal(res.status, 403, repo);
    assert.equal(errorOf(res)?.code, 'DENIED', repo);
  }
});

test('maxConcurrentFetches bounds the fills running against one registry', async () => {
  const blobs = await Promise.all(['c1', 'c2', 'c3'].map((seed) => pushBlob(registry.url, 'acme/app', { size: 2 * MiB, seed })));
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url, settings: { maxConcurrentFetches: 1 } }] });
  hub.throttle(4 * MiB);
  try {
    const pulls = blobs.map((b) => streamDigest(`${m.url}/v2/acme/app/blobs/${b.digest}`));
    const fills = (): { running: number; waiting: number } => m.stevedore.mirror.upstreams()[0]!.fills;
    await waitFor('all three fills to be registered', () => m.stevedore.mirror.fills.inProgress === 3);
    assert.deepEqual(fills(), { running: 1, waiting: 2 });
    const results = await Promise.all(pulls);
    assert.deepEqual(results.map((r) => r.digest), blobs.map((b) => b.digest));
  } finally {
    hub.throttle(null);
  }
});

test('serving stale has limits: maxStale for an upstream that fails, the shorter maxStaleDenied for one that now refuses the repository', async () => {
  const clock = { ms: Date.now(), now(): number { return this.ms; } };
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], clock, cache: { tagTtl: '10m', maxStale: '7d', maxStaleDenied: '1h' } });
  const tag = `${m.url}/v2/acme/app/manifests/v1`;
  assert.equal((await get(tag, { accept: ALL })).status, 200);
  const outcome = (): unknown => m.logs().filter((l) => l.msg === 'request' && l.path === '/v2/acme/app/manifests/v1').at(-1)?.cache;
  const refusedHead = (status: number): void => hub.failNext(1, status, {}, 'manifestHead');

  clock.ms += 10 * 60_000 + 30 * 60_000; // 30 minutes past tagTtl
  refusedHead(403);
  const withinDenied = await get(tag, { accept: ALL });
  assert.equal(withinDenied.status, 200);
  assert.equal(withinDenied.headers['docker-content-digest'], app.manifestDigest);
  assert.equal(outcome(), 'stale');

  clock.ms += 31 * 60_000; // 61 minutes past tagTtl: past maxStaleDenied, well within maxStale
  refusedHead(403);
  const denied = await get(tag, { accept: ALL });
  assert.equal(denied.status, 403);
  assert.equal(errorOf(denied)?.code, 'DENIED');
  refusedHead(401);
  assert.equal((await get(tag, { accept: ALL })).status, 403, 'a 401 from the upstream is a refusal too');
  refusedHead(503);
  const failing = await get(tag, { accept: ALL });
  assert.equal(failing.status, 200, 'an upstream that is down is still bridged by maxStale');
  assert.equal(outcome(), 'stale');

  clock.ms += 7 * 24 * 3_600_000; // past tagTtl + maxStale
  refusedHead(503);
  const expired = await get(tag, { accept: ALL });
  assert.equal(expired.status, 503, 'past maxStale the failure is passed on');
  assert.equal(errorOf(expired)?.code, 'MANIFEST_UNKNOWN');
});
