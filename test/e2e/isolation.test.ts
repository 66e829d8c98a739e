// Isolation of cached content: a blob or manifest is served for a repository
// only if it was fetched through it or its upstream confirms it is there.
// Digests are not secrets, so asking for a private digest through a name one
// may pull must not reach the private bytes. Real skopeo, a real registry
// behind the Docker Hub double, and a Stevedore process with per-user rules.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble, type HubRequestLog } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { pushBlob, pushImage, type PushedBlob, type PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess, type MirrorOptions } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get, json } from '../support/http.js';
import { waitFor } from '../support/wait.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
let seed: StandardSeed;
/** Holds exactly the layers and config of library/alpine:3.19: a public image pushed twice. */
let alpineCopy: PushedImage;
/** A large private layer, for a fill that is still running. */
let secretBlob: PushedBlob;
const work = mkdtempSync(join(tmpdir(), 'stevedore-isolation-'));
const cacheDir = join(work, 'cache');
const htpasswd = join(work, 'htpasswd');

const basic = (user: string, password: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const alice = basic('alice', 'alice-pw');
const ci = basic('ci', 'ci-pw');

function mirrorOptions(deny: string[] = []): MirrorOptions {
  return {
    dir: cacheDir,
    upstreams: [{ registry: 'docker.io', url: hub.url, settings: { deny } }],
    extra: {
      auth: {
        htpasswd,
        // alice may pull anything; ci only Docker Hub's official images.
        access: [{ user: 'ci', allow: ['docker.io/library/*'] }],
      },
    },
  };
}

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  alpineCopy = await pushImage(registry.url, 'library/alpine-copy', '3.19', {
    format: 'docker',
    layers: [100 * 1024, 300 * 1024, 1024 * 1024],
    seed: 'library/alpine:3.19/linux/amd64',
  });
  secretBlob = await pushBlob(registry.url, 'acme/app', { size: 24 * 1024 * 1024, seed: 'acme-secret-layer' });
  hub = await startHubDouble({ upstream: registry.url });
  const entry = (user: string, password: string): string => `${user}:${bcrypt.hashSync(password, 5)}`;
  writeFileSync(htpasswd, [entry('alice', 'alice-pw'), entry('ci', 'ci-pw'), ''].join('\n'));
  mirror = await startMirrorProcess({ port: await freePort(), ...mirrorOptions() });
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

const host = (): string => mirror.url.replace('http://', '');
const appDigests = (): string[] => [seed.app.configDigest, ...seed.app.layers.map((l) => l.digest)];
/** Upstream requests the hub answered, by kind, since the last reset. */
const answered = (kind: HubRequestLog['kind']): HubRequestLog[] => hub.stats().requests.filter((r) => r.kind === kind && r.status !== 401);

async function assertRefused(path: string, code: string, headers: Record<string, string>): Promise<void> {
  for (const method of ['GET', 'HEAD'] as const) {
    const res = await get(`${mirror.url}${path}`, { ...headers, accept: seed.app.manifestMediaType }, method);
    assert.equal(res.status, 404, `${method} ${path} must be refused`);
    assert.equal(res.headers['docker-content-digest'], undefined, `${method} ${path} must not confirm the digest`);
    if (method === 'HEAD') {
      assert.equal(res.body.length, 0);
      continue;
    }
    assert.equal(json(res).errors?.[0]?.code, code, `${method} ${path}`);
    assert.ok(res.body.length < 1024, `${method} ${path} sent ${res.body.length} bytes: an error body only`);
  }
}

test('alice pulls a private image; ci, limited to docker.io/library/*, cannot reach it by digest through library/alpine', async () => {
  const pulled = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'alice:alice-pw', `docker://${host()}/acme/app:v1`, `dir:${join(work, 'alice-app')}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  assert.equal(readDirCopy(join(work, 'alice-app')).manifestDigest, seed.app.manifestDigest);

  hub.resetStats();
  await assertRefused(`/v2/library/alpine/manifests/${seed.app.manifestDigest}`, 'MANIFEST_UNKNOWN', ci);
  for (const digest of appDigests()) await assertRefused(`/v2/library/alpine/blobs/${digest}`, 'BLOB_UNKNOWN', ci);

  const bySkopeo = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:ci-pw', `docker://${host()}/library/alpine@${seed.app.manifestDigest}`, `dir:${join(work, 'ci-app')}`]);
  assert.notEqual(bySkopeo.code, 0, 'skopeo must not get the private image through library/alpine');
  assert.match(bySkopeo.stderr, /manifest unknown/i);

  // The upstream was asked under library/alpine's own scope, and said no; no byte of acme/app went anywhere.
  const stats = hub.stats();
  assert.equal(stats.blobGet, 0);
  assert.equal(stats.manifestGet, 0);
  assert.ok(answered('manifestHead').every((r) => r.path === `/v2/library/alpine/manifests/${seed.app.manifestDigest}` && r.status === 404));
  assert.equal(answered('manifestHead').length, 1, 'one HEAD; the 404 is remembered for the repeats');
  assert.deepEqual(
    answered('blobHead').map((r) => r.path).sort(),
    appDigests().map((d) => `/v2/library/alpine/blobs/${d}`).sort(),
    'one HEAD per asked digest, under library/alpine',
  );
  assert.ok(answered('blobHead').every((r) => r.status === 404));
  // alice still gets her own image from the cache.
  const own = await get(`${mirror.url}/v2/acme/app/blobs/${seed.app.layers[0]!.digest}`, alice);
  assert.equal(own.status, 200);
});

test('a fill in progress through acme/app is not joined through library/alpine', async () => {
  hub.throttle(4 * 1024 * 1024);
  hub.resetStats();
  const aliceGet = request(`${mirror.url}/v2/acme/app/blobs/${secretBlob.digest}`, { headers: alice });
  try {
    await waitFor('the fill to start upstream', () => answered('blobGet').some((r) => r.path.endsWith(secretBlob.digest)));
    await assertRefused(`/v2/library/alpine/blobs/${secretBlob.digest}`, 'BLOB_UNKNOWN', ci);
  } finally {
    hub.throttle(null);
  }
  const res = await aliceGet;
  assert.equal(res.statusCode, 200);
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(body.length, secretBlob.size);
  assert.equal(answered('blobGet').length, 1, 'one upstream GET, for alice');
  assert.ok(answered('blobHead').every((r) => r.path === `/v2/library/alpine/blobs/${secretBlob.digest}` && r.status === 404));
});

test('a second repository that really holds the same layers gets them with one upstream HEAD each and no GET', async () => {
  const first = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:ci-pw', `docker://${host()}/library/alpine:3.19`, `dir:${join(work, 'alpine')}`]);
  assert.equal(first.code, 0, first.stderr);
  const shared = [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)].sort();
  assert.deepEqual([alpineCopy.configDigest, ...alpineCopy.layers.map((l) => l.digest)].sort(), shared, 'the copy shares every blob');

  hub.resetStats();
  const second = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:ci-pw', `docker://${host()}/library/alpine-copy:3.19`, `dir:${join(work, 'alpine-copy')}`]);
  assert.equal(second.code, 0, second.stderr);
  const copy = readDirCopy(join(work, 'alpine-copy'));
  assert.equal(copy.manifestDigest, alpineCopy.manifestDigest);
  assert.deepEqual([...copy.blobs].sort(), shared);
  assert.equal(hub.stats().blobGet, 0, 'no blob is downloaded twice');
  assert.deepEqual(answered('blobHead').map((r) => r.path).sort(), shared.map((d) => `/v2/library/alpine-copy/blobs/${d}`).sort(), 'exactly one HEAD per shared blob');
  assert.ok(answered('blobHead').every((r) => r.status === 200));

  // The confirmation is kept: a third pull of the copy asks nothing upstream about its blobs.
  hub.resetStats();
  const third = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:ci-pw', `docker://${host()}/library/alpine-copy:3.19`, `dir:${join(work, 'alpine-copy-2')}`]);
  assert.equal(third.code, 0, third.stderr);
  assert.equal(hub.stats().blobHead + hub.stats().blobGet, 0);
});

test('an upstream deny rule added later cannot be bypassed through an allowed name', async () => {
  await mirror.stop();
  mirror = await startMirrorProcess({ port: await freePort(), ...mirrorOptions(['acme/**']) });
  const direct = await get(`${mirror.url}/v2/acme/app/manifests/${seed.app.manifestDigest}`, alice);
  assert.equal(direct.status, 403);
  assert.equal(json(direct).errors?.[0]?.code, 'DENIED');
  hub.resetStats();
  await assertRefused(`/v2/library/alpine/manifests/${seed.app.manifestDigest}`, 'MANIFEST_UNKNOWN', alice);
  for (const digest of appDigests()) await assertRefused(`/v2/library/alpine/blobs/${digest}`, 'BLOB_UNKNOWN', alice);
  assert.equal(hub.stats().blobGet + hub.stats().manifestGet, 0);
});
