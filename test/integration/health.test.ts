// Liveness and readiness: /healthz says the process answers, /readyz whether
// it can serve pulls now (the index, where fills write, the disk's free space,
// and the upstreams unless the cache has something to serve without them).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { requirement } from '../support/requirements.js';
import { rgwUnavailableReason, startRgw } from '../support/rgw.js';
import { pushBlob, type PushedBlob } from '../support/seed.js';
import { startMirror, type MirrorOptions, type TestMirror } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';
import type { ReadinessReport } from '../../src/jobs/readiness.js';

let registry: RegistryHandle;
let blob: PushedBlob;
const work = mkdtempSync(join(tmpdir(), 'stevedore-health-'));
const mirrors: TestMirror[] = [];
const rgwTools = requirement('Ceph RADOS Gateway', await rgwUnavailableReason());

before(async () => {
  registry = await startRegistry();
  blob = await pushBlob(registry.url, 'acme/app', { size: 64 * 1024, seed: 'health-layer' });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function mirrorWith(options: MirrorOptions): Promise<TestMirror> {
  const m = await startMirror(options);
  mirrors.push(m);
  return m;
}

async function probe(m: TestMirror, path: '/readyz' | '/healthz'): Promise<{ status: number; body: ReadinessReport & { status: string } }> {
  const res = await get(`${m.url}${path}`);
  return { status: res.status, body: JSON.parse(res.body.toString('utf8')) as ReadinessReport & { status: string } };
}

const deadUpstream = async (): Promise<MirrorOptions['upstreams']> => [{ registry: 'docker.io', url: `http://127.0.0.1:${await freePort()}` }];
// One refused probe opens the circuit, for an hour.
const opensAtOnce = { failureThreshold: 1, openMin: '1h' };

test('a healthy mirror is live and ready, and says which checks passed', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: registry.url }] });
  const live = await probe(m, '/healthz');
  assert.equal(live.status, 200);
  assert.equal(live.body.status, 'ok');
  const ready = await probe(m, '/readyz');
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  assert.equal(ready.body.status, 'ready');
  assert.deepEqual(ready.body.failing, []);
  assert.deepEqual(Object.keys(ready.body.checks).sort(), ['cacheDir', 'freeSpace', 'index', 'upstreams']);
  for (const [name, check] of Object.entries(ready.body.checks)) assert.equal(check.ok, true, name);
});

test('a cache directory where fills cannot write: not ready (cacheDir), still live', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: registry.url }] });
  // Root ignores file modes: a file where the temp directory was stops every write there.
  const temp = join(m.dir, 'tmp');
  rmSync(temp, { recursive: true, force: true });
  writeFileSync(temp, 'not a directory');
  try {
    const ready = await probe(m, '/readyz');
    assert.equal(ready.status, 503);
    assert.equal(ready.body.status, 'not ready');
    assert.deepEqual(ready.body.failing, ['cacheDir']);
    assert.match(String(ready.body.checks.cacheDir?.detail), /cannot create and remove a file in .*tmp/);
    assert.equal((await probe(m, '/healthz')).status, 200, 'liveness is only whether the process answers');
  } finally {
    rmSync(temp, { force: true });
    mkdirSync(temp);
  }
});

test('less free space on the disk than cache.minFreeSpace: not ready (freeSpace)', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: registry.url }], cache: { minFreeSpace: '1000000TiB' } });
  const ready = await probe(m, '/readyz');
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.body.failing, ['freeSpace']);
  assert.match(String(ready.body.checks.freeSpace?.detail), /under the cache\.minFreeSpace floor/);
  assert.equal((await probe(m, '/healthz')).status, 200);
});

test('every upstream endpoint down and nothing cached: not ready (upstreams)', async () => {
  const m = await mirrorWith({ upstreams: await deadUpstream(), health: opensAtOnce });
  assert.equal((await probe(m, '/readyz')).status, 200, 'no circuit is open yet');
  await m.stevedore.probes.runOnce();
  assert.equal(m.stevedore.mirror.upstreams()[0]!.endpoints[0]!.circuit, 'open');
  const ready = await probe(m, '/readyz');
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.body.failing, ['upstreams']);
  assert.match(String(ready.body.checks.upstreams?.detail), /circuit is open \(docker\.io http:\/\/127\.0\.0\.1:\d+\) and the cache holds nothing/);
  assert.equal((await probe(m, '/healthz')).status, 200);
});

test('every upstream endpoint down with something cached: still ready, serving the cache', async () => {
  const dir = join(work, 'cached');
  const filled = await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], dir });
  try {
    assert.equal((await streamDigest(`${filled.url}/v2/acme/app/blobs/${blob.digest}`)).digest, blob.digest);
    await filled.stevedore.mirror.fills.drain(10_000);
  } finally {
    await filled.stop();
  }
  const m = await mirrorWith({ upstreams: await deadUpstream(), health: opensAtOnce, dir });
  await m.stevedore.probes.runOnce();
  assert.equal(m.stevedore.mirror.upstreams()[0]!.endpoints[0]!.circuit, 'open');
  const ready = await probe(m, '/readyz');
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  assert.equal(ready.body.checks.upstreams?.ok, true);
  assert.match(String(ready.body.checks.upstreams?.detail), /serving the 1 cached blobs/);
  assert.equal((await get(`${m.url}/v2/acme/app/blobs/${blob.digest}`)).status, 200, 'and the cached blob is served');
});

rgwTools.test('on S3, the bucket is checked (a HEAD, with a deadline): a gateway down is not ready (store)', { timeout: 180_000 }, async (t) => {
  const rgw = await startRgw();
  const onS3: TestMirror[] = [];
  t.after(async () => {
    for (const m of onS3) await m.stop();
    await rgw.stop();
  });
  await rgw.createBucket('readyz');
  const s3 = { driver: 's3', s3: { bucket: 'readyz', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, requestTimeout: '1s' } };
  // Two mirrors, both started while the bucket answers: one asked before the outage, one after (answers are remembered a few seconds).
  for (let i = 0; i < 2; i++) onS3.push(await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], extra: { storage: s3 } }));
  const [before, during] = onS3 as [TestMirror, TestMirror];
  const ready = await probe(before, '/readyz');
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  assert.equal(ready.body.checks.store?.ok, true);
  assert.match(String(ready.body.checks.freeSpace?.detail), /not checked: the store has no local disk/);
  await rgw.stopGateway();
  try {
    const down = await probe(during, '/readyz');
    assert.equal(down.status, 503);
    assert.deepEqual(down.body.failing, ['store']);
    assert.ok(down.body.checks.store?.detail, 'the failure says why');
    assert.equal((await probe(during, '/healthz')).status, 200);
  } finally {
    await rgw.startGateway();
  }
});
