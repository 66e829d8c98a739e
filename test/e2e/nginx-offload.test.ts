// Offload: nginx in front of Stevedore (docs/nginx-offload.conf) sends blobs
// Stevedore has verified, with sendfile; misses and unverified files still
// stream through Stevedore. Real nginx, real skopeo.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, pushImage, type PushedBlob, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { startNginxFront, type NginxFront } from '../support/nginx-front.js';
import { get, streamDigest } from '../support/http.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { sha256Digest } from '../support/content.js';

const MiB = 1024 * 1024;
let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
let front: NginxFront;
let big: PushedBlob;
let image: PushedImage;
const work = mkdtempSync(join(tmpdir(), 'stevedore-offload-'));
const cacheDir = join(work, 'cache');

before(async () => {
  registry = await startRegistry();
  big = await pushBlob(registry.url, 'acme/big', { size: 3 * MiB, seed: 'offload-big' });
  image = await pushImage(registry.url, 'library/offload', 'v1', { format: 'docker', layers: [2 * MiB, 10 * 1024] });
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirror({
    dir: cacheDir,
    upstreams: [{ registry: 'docker.io', url: hub.url }],
    extra: { offload: { header: 'X-Accel-Redirect', prefix: '/_stevedore/', minSize: '1MiB' } },
  });
  front = await startNginxFront(mirror.url, cacheDir, 1);
});

after(async () => {
  await front?.stop();
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

const requestsFor = (digest: string): { cache?: string; offloaded?: boolean; bytes?: number; method?: string }[] =>
  mirror.logs().filter((l) => l.msg === 'request' && l.digest === digest) as { cache?: string; offloaded?: boolean; bytes?: number }[];

test('a miss streams through Stevedore; once verified, nginx sends the file, with the digest headers and Ranges', async () => {
  const url = `${front.url}/v2/acme/big/blobs/${big.digest}`;
  const cold = await streamDigest(url);
  assert.equal(cold.status, 200);
  assert.equal(cold.digest, big.digest);
  await mirror.stevedore.mirror.fills.drain(10_000);
  assert.deepEqual(requestsFor(big.digest).map((l) => [l.cache, l.offloaded ?? false]), [['miss', false]]);

  hub.resetStats();
  const warm = await get(url);
  assert.equal(warm.status, 200);
  assert.equal(sha256Digest(warm.body), big.digest);
  assert.equal(warm.headers['docker-content-digest'], big.digest);
  assert.equal(warm.headers['content-length'], String(big.size));
  const offloaded = requestsFor(big.digest).at(-1)!;
  assert.equal(offloaded.cache, 'hit');
  assert.equal(offloaded.offloaded, true);
  assert.ok((offloaded.bytes ?? Infinity) < 2_000, `Stevedore itself sent ${offloaded.bytes} bytes`);
  assert.equal(hub.stats().blobGet, 0);

  const ranged = await get(url, { range: 'bytes=1000-1999' });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.body.length, 1000);
  assert.equal(ranged.headers['content-range'], `bytes 1000-1999/${big.size}`);
  const whole = (await get(url)).body;
  assert.deepEqual(ranged.body, whole.subarray(1000, 2000));

  // The internal location cannot be asked for directly.
  const hex = big.digest.slice(7);
  assert.equal((await get(`${front.url}/_stevedore/blobs/sha256/${hex.slice(0, 2)}/${hex}`)).status, 404);
});

test('skopeo pulls through nginx twice: same digests, large layers sent by nginx, small ones by Stevedore', async () => {
  const host = front.url.replace('http://', '');
  for (const name of ['first', 'second']) {
    const copy = await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/library/offload:v1`, `dir:${join(work, name)}`]);
    assert.equal(copy.code, 0, copy.stderr);
    const pulled = readDirCopy(join(work, name));
    assert.equal(pulled.manifestDigest, image.manifestDigest);
    assert.deepEqual([...pulled.blobs].sort(), [image.configDigest, ...image.layers.map((l) => l.digest)].sort());
    await mirror.stevedore.mirror.fills.drain(10_000);
  }
  const [large, small] = image.layers;
  assert.equal(requestsFor(large!.digest).at(-1)?.offloaded, true, 'the 2 MiB layer went out through nginx on the second pull');
  assert.notEqual(requestsFor(small!.digest).at(-1)?.offloaded, true, 'a 10 KiB layer is cheaper to send directly');
});

test('after a restart, a blob is verified by Stevedore before nginx may send it', async () => {
  await mirror.stop();
  mirror = await startMirror({
    dir: cacheDir,
    upstreams: [{ registry: 'docker.io', url: hub.url }],
    extra: { offload: { header: 'X-Accel-Redirect', prefix: '/_stevedore/', minSize: '1MiB' } },
  });
  await front.stop();
  front = await startNginxFront(mirror.url, cacheDir, 1);
  const url = `${front.url}/v2/acme/big/blobs/${big.digest}`;
  for (let i = 0; i < 2; i++) assert.equal((await streamDigest(url)).digest, big.digest);
  assert.deepEqual(requestsFor(big.digest).map((l) => l.offloaded ?? false), [false, true], 'first read re-hashed by Stevedore, then offloaded');
});

test('a cached file that vanished is not handed to nginx: Stevedore notices, fetches it again once, and serves the right bytes', async () => {
  const hex = big.digest.slice(7);
  rmSync(join(cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
  hub.resetStats();
  const url = `${front.url}/v2/acme/big/blobs/${big.digest}`;
  const again = await streamDigest(url);
  assert.equal(again.status, 200);
  assert.equal(again.digest, big.digest);
  assert.equal(again.bytes, big.size);
  assert.equal(hub.stats().blobGet, 1, 'fetched from upstream again, once');
  assert.equal(requestsFor(big.digest).at(-1)?.offloaded ?? false, false);
  await mirror.stevedore.mirror.fills.drain(10_000);
  // Refilled and verified by this process: nginx may send it again.
  assert.equal((await streamDigest(url)).digest, big.digest);
  assert.equal(requestsFor(big.digest).at(-1)?.offloaded, true);
});
