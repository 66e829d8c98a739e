// Log levels of a real mirror: polls and probes are debug, pulls are info, a
// 503 answered to a client and a failed warm-up are warnings, and an upstream
// that stays down is logged again at a bounded rate, not once per trial.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushImage, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get } from '../support/http.js';
import { STILL_DOWN_LOG_MS } from '../../src/upstream/endpoint-state.js';

const DEBUG = 20;
const INFO = 30;
const WARN = 40;

let registry: RegistryHandle;
let hub: HubDouble;
let image: PushedImage;
const mirrors: TestMirror[] = [];

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry.url, 'team/app', 'v1', { format: 'oci', layers: [10_000] });
  hub = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await hub?.stop();
  await registry?.stop();
});

async function mirrorWith(options: Parameters<typeof startMirror>[0]): Promise<TestMirror> {
  const m = await startMirror(options);
  mirrors.push(m);
  return m;
}

/** The level of the access line of `path` (the last one), once the response closed. */
async function requestLevel(m: TestMirror, path: string): Promise<number> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const line = m.logs().filter((l) => l.msg === 'request' && l.path === path).at(-1);
    if (line) return line.level as number;
    // The line is written when the response closes, a moment after the client has it.
    if (Date.now() > deadline) throw new Error(`no request line for ${path}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const lines = (m: TestMirror, msg: string): Record<string, unknown>[] => m.logs().filter((l) => l.msg === msg);

test('health checks, scrapes, dashboard polls and assets are debug; pulls are info; a 503 to a client is a warning', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  for (const path of ['/healthz', '/metrics', '/api/stats', '/api/upstreams', '/ui/app.js', '/ui/']) {
    assert.equal((await get(`${m.url}${path}`)).status, 200, path);
    assert.equal(await requestLevel(m, path), DEBUG, path);
  }
  const manifest = '/v2/team/app/manifests/v1';
  assert.equal((await get(`${m.url}${manifest}`, { accept: image.manifestMediaType })).status, 200);
  assert.equal(await requestLevel(m, manifest), INFO, 'a pull');
  const missing = '/v2/team/app/manifests/nope';
  assert.equal((await get(`${m.url}${missing}`, { accept: image.manifestMediaType })).status, 404);
  assert.equal(await requestLevel(m, missing), INFO, 'a 404 is the client\'s business');

  await hub.down('refuse');
  try {
    const uncached = '/v2/team/other/manifests/v1';
    assert.equal((await get(`${m.url}${uncached}`, { accept: image.manifestMediaType })).status, 503);
    assert.equal(await requestLevel(m, uncached), WARN, 'a 503 answered to a client');
  } finally {
    await hub.up();
  }
});

test('a failed warm-up is a warning that says why; a good one is info', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  const good = await m.stevedore.warmups.start({ name: 'good', images: ['team/app:v1'], platforms: 'all', pin: false, concurrency: 1, trigger: 'api' }).done;
  const bad = await m.stevedore.warmups.start({ name: 'bad', images: ['team/missing:v1'], platforms: 'all', pin: false, concurrency: 1, trigger: 'api' }).done;
  assert.deepEqual([good.status, bad.status], ['succeeded', 'failed']);
  const finished = lines(m, 'warm-up finished');
  assert.deepEqual(finished.map((l) => [l.job, l.level]), [['good', INFO]]);
  const failed = lines(m, 'warm-up failed');
  assert.deepEqual(failed.map((l) => [l.job, l.level]), [['bad', WARN]]);
  assert.match(JSON.stringify(failed[0]!.firstErrors), /team\/missing:v1/, 'the line says which image failed');
});

test('an endpoint that stays down is re-logged at most once a minute, and its recovery once', async () => {
  const flaky = await startHubDouble({ upstream: registry.url });
  try {
    const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: flaky.url }], health: { failureThreshold: 1, openMin: '1h' } });
    await flaky.down('refuse');
    // Real probes, well within a minute: the circuit opens once and that is all the log says.
    for (let i = 0; i < 5; i++) await m.stevedore.probes.runOnce();
    assert.deepEqual(lines(m, 'endpoint circuit opened').map((l) => l.level), [WARN]);
    assert.equal(lines(m, 'endpoint still down').length, 0);

    // Later failures (trials, probes) with the clock stepped through a few minutes.
    const state = m.stevedore.mirror.resolve('team/app', undefined, []).upstream.endpoints[0]!.state;
    const start = Date.now();
    for (let s = 1; s <= 200; s++) state.failure('health probe: ECONNREFUSED', start + s * 1_000);
    const still = lines(m, 'endpoint still down');
    assert.equal(still.length, Math.floor(200_000 / STILL_DOWN_LOG_MS), 'one line per minute of 200 s of failures');
    assert.ok(still.every((l) => l.level === WARN && typeof l.downSince === 'string' && l.endpoint === flaky.url));

    await flaky.up();
    await m.stevedore.probes.runOnce();
    assert.deepEqual(lines(m, 'endpoint answering again: circuit closed').map((l) => l.level), [INFO]);
    await m.stevedore.probes.runOnce();
    assert.equal(lines(m, 'endpoint answering again: circuit closed').length, 1, 'logged once, not on every success');
  } finally {
    await flaky.stop();
  }
});
