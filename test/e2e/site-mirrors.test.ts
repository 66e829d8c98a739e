// Two Stevedore processes chained (child → parent → Docker Hub double → real
// registry), pulled through with skopeo: caching at both levels, failover when
// the parent stops, and a mistaken loop that fails cleanly.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get, json } from '../support/http.js';
import { waitFor } from '../support/wait.js';

const HUB_USER = 'siteuser';
const HUB_PASSWORD = 'site-secret-pw';
let registry: RegistryHandle;
let hub: HubDouble;
let parent: MirrorProcess;
let child: MirrorProcess;
let seed: StandardSeed;
const work = mkdtempSync(join(tmpdir(), 'stevedore-chain-'));

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url, credentials: { username: HUB_USER, password: HUB_PASSWORD } });
  parent = await startMirrorProcess({
    port: await freePort(),
    instanceId: 'regional',
    upstreams: [{ registry: 'docker.io', url: hub.url, username: HUB_USER, password: HUB_PASSWORD }],
  });
  child = await startMirrorProcess({
    port: await freePort(),
    instanceId: 'site',
    health: { failureThreshold: 1, openMin: '10m' },
    upstreams: [
      {
        registry: 'docker.io',
        url: [
          { url: parent.url, mirror: true },
          { url: hub.url, username: HUB_USER, password: HUB_PASSWORD },
        ],
      },
    ],
  });
});

after(async () => {
  await child?.stop();
  await parent?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

const blobFile = (dir: string, digest: string): string => join(dir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

async function pull(via: MirrorProcess, ref: string, name: string, extra: string[] = []): Promise<ReturnType<typeof readDirCopy>> {
  const dest = join(work, name);
  const result = await skopeo(['copy', '--src-tls-verify=false', ...extra, `docker://${via.url.replace('http://', '')}/${ref}`, `dir:${dest}`]);
  assert.equal(result.code, 0, `skopeo copy ${ref} failed: ${result.stderr}`);
  return readDirCopy(dest);
}

test('a pull through the site mirror is cached at both levels and fetched upstream once', async () => {
  hub.resetStats();
  const copy = await pull(child, 'library/alpine:3.19', 'alpine');
  assert.equal(copy.manifestDigest, seed.alpine.manifestDigest);
  const blobs = [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)];
  // A client finishes as soon as the bytes verify; the blob lands in the cache just after.
  for (const digest of blobs) {
    await waitFor(`${digest} cached at the site`, () => existsSync(blobFile(child.dir, digest)));
    await waitFor(`${digest} cached at the regional mirror`, () => existsSync(blobFile(parent.dir, digest)));
  }
  assert.equal(hub.stats().blobGet, blobs.length, 'each blob left the hub once');
  const parentLines = parent.logs().split('\n').filter((l) => l.includes('"msg":"request"') && l.includes('/v2/library/alpine/'));
  assert.ok(parentLines.length > 0, 'the child went through the parent');
  assert.ok(parentLines.every((l) => l.includes('"upstream":"docker.io"')), 'ns=docker.io was passed along');
  // Docker Hub credentials stay with the endpoints they are configured for.
  const basic = `Basic ${Buffer.from(`${HUB_USER}:${HUB_PASSWORD}`).toString('base64')}`;
  assert.ok(hub.authSeen().filter((a) => a.authorization === basic).every((a) => a.path === '/token'));
  assert.ok(!child.logs().includes(HUB_PASSWORD) && !parent.logs().includes(HUB_PASSWORD));
});

test('HEAD of a blob the parent has not cached works through the chain', async () => {
  const layer = seed.app.layers[0]!;
  const res = await get(`${child.url}/v2/acme/app/blobs/${layer.digest}`, {}, 'HEAD');
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-length'], String(layer.size));
  assert.equal(res.headers['docker-content-digest'], layer.digest);
});

test('with the parent stopped, the site mirror fails over to the direct endpoint', async () => {
  await parent.stop();
  hub.resetStats();
  const child64 = seed.busybox.children['linux/arm64']!;
  const copy = await pull(child, 'library/busybox:multi', 'busybox-arm64', ['--override-os', 'linux', '--override-arch', 'arm64']);
  assert.equal(copy.manifestDigest, child64.manifestDigest);
  assert.equal(hub.stats().blobGet, child64.layers.length + 1, 'fetched straight from the hub');
  // The cached image still comes from the site without any upstream.
  hub.resetStats();
  const again = await pull(child, 'library/alpine:3.19', 'alpine-again');
  assert.equal(again.manifestDigest, seed.alpine.manifestDigest);
  assert.equal(hub.stats().blobGet + hub.stats().manifestGet, 0);
});

test('a loop configured by mistake fails fast with a clear error', async () => {
  const [portA, portB] = [await freePort(), await freePort()];
  const loopA = startMirrorProcess({ port: portA, instanceId: 'loop-a', upstreams: [{ registry: 'docker.io', url: [{ url: `http://127.0.0.1:${portB}`, mirror: true }] }] });
  const loopB = startMirrorProcess({ port: portB, instanceId: 'loop-b', upstreams: [{ registry: 'docker.io', url: [{ url: `http://127.0.0.1:${portA}`, mirror: true }] }] });
  const [a, b] = await Promise.all([loopA, loopB]);
  try {
    const started = Date.now();
    const res = await get(`${a.url}/v2/library/alpine/manifests/3.19`, { accept: seed.alpine.manifestMediaType });
    assert.equal(res.status, 508);
    const error = json(res).errors?.[0];
    assert.equal(error?.code, 'MANIFEST_UNKNOWN');
    const copy = await skopeo(['copy', '--src-tls-verify=false', `docker://${a.url.replace('http://', '')}/library/alpine:3.19`, `dir:${join(work, 'loop')}`], 60_000);
    assert.notEqual(copy.code, 0);
    assert.ok(Date.now() - started < 30_000, 'no hang');
    assert.match(b.logs(), /loop-a → loop-b → loop-a/);
  } finally {
    await a.stop();
    await b.stop();
  }
});
