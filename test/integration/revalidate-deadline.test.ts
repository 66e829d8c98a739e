// revalidateTimeout bounds the whole revalidation of a cached tag: every
// endpoint and every phase (the /v2/ ping, the token fetch, the HEAD, its retry
// after a 401). Two Docker Hub doubles that accept connections but never
// answer must not keep a cached tag from its client for the headers timeout.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type Hold, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushImage, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';
import { waitFor } from '../support/wait.js';

const ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest].join(', ');
const REVALIDATE_TIMEOUT_MS = 3000;
const MARGIN_MS = 1500;
const TAG_TTL_MS = 3_600_000;
const TAG = '/v2/acme/app/manifests/v1';

let registry: RegistryHandle;
let hubA: HubDouble;
let hubB: HubDouble;
let app: PushedImage;
let other: PushedImage;

before(async () => {
  registry = await startRegistry();
  app = await pushImage(registry.url, 'acme/app', 'v1', { layers: [2000, 3000], format: 'oci' });
  other = await pushImage(registry.url, 'acme/other', 'v1', { layers: [1000], format: 'oci' });
  // The hub doubles always ask for bearer tokens: /v2/ answers 401 with the challenge.
  hubA = await startHubDouble({ upstream: registry.url });
  hubB = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  await hubA?.stop();
  await hubB?.stop();
  await registry?.stop();
});

/** docker.io through both doubles, with the timeouts: 30 s for headers, 3 s to revalidate. */
function settings(dir: string, clock?: { now(): number }): Parameters<typeof startMirror>[0] {
  return {
    upstreams: [{ registry: 'docker.io', url: [hubA.url, hubB.url], timeouts: { headers: '30s' } }],
    cache: { tagTtl: '1h', revalidateTimeout: `${REVALIDATE_TIMEOUT_MS}ms` },
    dir,
    ...(clock ? { clock } : {}),
  };
}

/**
 * A cache directory holding acme/app:v1, fetched by a mirror that is gone now,
 * and a fresh mirror on it whose clock runs two tag TTLs ahead: the tag is
 * past its TTL (well within maxStale), nothing is pinged and no token is held.
 */
async function staleMirror(): Promise<{ m: TestMirror; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-deadline-'));
  const seeding = await startMirror(settings(dir));
  try {
    assert.equal((await get(`${seeding.url}${TAG}`, { accept: ALL })).status, 200);
  } finally {
    await seeding.stop();
  }
  const m = await startMirror(settings(dir, { now: () => Date.now() + 2 * TAG_TTL_MS }));
  return { m, dir };
}

/** Both endpoints accept connections, then never answer anything: /v2/ ping, /token, manifests. */
function hangBoth(): Hold[] {
  hubA.resetStats();
  hubB.resetStats();
  return [hubA.hold(() => true), hubB.hold(() => true)];
}

async function cleanUp(m: TestMirror | undefined, dir: string | undefined): Promise<void> {
  hubA.clearFaults(); // releases every hold
  hubB.clearFaults();
  await m?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}

const requestsTo = (hub: HubDouble): string[] => hub.stats().requests.map((r) => `${r.method} ${r.path}`);

/** GETs the tag: the cached manifest, served stale within revalidateTimeout plus the margin. Returns how long it took. */
async function pullStale(m: TestMirror): Promise<number> {
  const started = performance.now();
  const res = await get(`${m.url}${TAG}`, { accept: ALL });
  const took = performance.now() - started;
  assert.equal(res.status, 200);
  assert.equal(res.headers['docker-content-digest'], app.manifestDigest);
  assert.ok(res.body.equals(app.manifestBytes), 'the cached manifest, byte for byte');
  assert.ok(took < REVALIDATE_TIMEOUT_MS + MARGIN_MS, `answered after ${Math.round(took)} ms, not within revalidateTimeout (${REVALIDATE_TIMEOUT_MS} ms) + ${MARGIN_MS} ms`);
  const line = m.logs().filter((l) => l.msg === 'request' && l.path === TAG).at(-1);
  assert.equal(line?.cache, 'stale', 'logged as stale');
  assert.ok(m.logs().some((l) => l.msg === 'tag revalidation failed; serving the cached manifest'), 'because the revalidation failed');
  assert.deepEqual(requestsTo(hubB), [], 'no further endpoint is tried once the deadline passed');
  return took;
}

test('a fresh mirror: the /v2/ ping hangs on both endpoints, and the cached tag is served stale at the deadline', async (t) => {
  let m: TestMirror | undefined;
  let dir: string | undefined;
  try {
    ({ m, dir } = await staleMirror());
    hangBoth();
    const took = await pullStale(m);
    assert.deepEqual(requestsTo(hubA), ['GET /v2/'], 'it waited on the ping');
    t.diagnostic(`ping hangs: stale after ${Math.round(took)} ms`);
  } finally {
    await cleanUp(m, dir);
  }
});

test('pinged, but no token for the repository yet: the token fetch hangs, and the cached tag is served stale at the deadline', async (t) => {
  let m: TestMirror | undefined;
  let dir: string | undefined;
  try {
    ({ m, dir } = await staleMirror());
    // Another repository: the endpoint's challenge is known, acme/app's token is not.
    assert.equal((await get(`${m.url}/v2/acme/other/manifests/v1`, { accept: ALL })).status, 200);
    hangBoth();
    const took = await pullStale(m);
    assert.deepEqual(requestsTo(hubA), ['GET /token'], 'it waited on the token fetch');
    t.diagnostic(`token fetch hangs: stale after ${Math.round(took)} ms`);
  } finally {
    await cleanUp(m, dir);
  }
});

test('a cached token the upstream rejects: the fresh token fetch after the 401 hangs, and the cached tag is served stale at the deadline', async (t) => {
  let m: TestMirror | undefined;
  let dir: string | undefined;
  try {
    ({ m, dir } = await staleMirror());
    // A blob of acme/app (not cached yet) gets the mirror a token for the repository.
    const blob = await streamDigest(`${m.url}/v2/acme/app/blobs/${app.layers[0]!.digest}`);
    assert.equal(blob.digest, app.layers[0]!.digest);
    hubA.expireTokensNow();
    hubB.expireTokensNow();
    hubA.resetStats();
    hubB.resetStats();
    hubA.hold('token');
    hubB.hold('token');
    const took = await pullStale(m);
    assert.deepEqual(requestsTo(hubA), [`HEAD ${TAG}`, 'GET /token'], 'the HEAD drew a 401, and the new token never came');
    assert.equal(hubA.stats().unauthorized, 1);
    t.diagnostic(`token re-fetch hangs: stale after ${Math.round(took)} ms`);
  } finally {
    await cleanUp(m, dir);
  }
});

test('a revalidation that gives up at its deadline does not fail the pull sharing its ping', async () => {
  let m: TestMirror | undefined;
  let dir: string | undefined;
  try {
    ({ m, dir } = await staleMirror());
    const [holdA] = hangBoth();
    // The revalidation starts the ping; a cold pull, which has no deadline of its own, joins it.
    const stale = pullStale(m);
    await waitFor('the revalidation to wait on the ping', () => holdA!.waiting === 1);
    let settled = false;
    const cold = get(`${m.url}/v2/acme/other/manifests/v1`, { accept: ALL }).finally(() => (settled = true));
    await stale;
    assert.equal(settled, false, 'the cold pull still waits on the shared ping');
    hubA.clearFaults();
    hubB.clearFaults();
    const res = await cold;
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(other.manifestBytes));
    assert.equal(requestsTo(hubA).filter((r) => r === 'GET /v2/').length, 1, 'one ping, shared');
    assert.deepEqual(requestsTo(hubB), [], 'the shared ping did not fail: the cold pull stayed on the first endpoint');
  } finally {
    await cleanUp(m, dir);
  }
});

test('a revalidation that gives up at its deadline does not fail the pull sharing its token fetch', async () => {
  let m: TestMirror | undefined;
  let dir: string | undefined;
  try {
    ({ m, dir } = await staleMirror());
    assert.equal((await get(`${m.url}/v2/acme/other/manifests/v1`, { accept: ALL })).status, 200);
    const [holdA] = hangBoth();
    // The revalidation starts acme/app's token fetch; a blob pull, which has no deadline of its own, joins it.
    const stale = pullStale(m);
    await waitFor('the revalidation to wait on the token fetch', () => holdA!.waiting === 1);
    let settled = false;
    const blob = streamDigest(`${m.url}/v2/acme/app/blobs/${app.layers[1]!.digest}`).finally(() => (settled = true));
    await stale;
    assert.equal(settled, false, 'the blob pull still waits on the shared token fetch');
    hubA.clearFaults();
    hubB.clearFaults();
    const res = await blob;
    assert.equal(res.status, 200);
    assert.equal(res.digest, app.layers[1]!.digest);
    assert.equal(hubA.stats().tokens, 1, 'one token fetch, shared');
    assert.deepEqual(requestsTo(hubB), [], 'the shared token fetch did not fail: the blob stayed on the first endpoint');
  } finally {
    await cleanUp(m, dir);
  }
});
