// The bucket failing under Stevedore, and redirect mode. With the gateway
// stopped mid-pull or while idle, a pull whose upstream works still succeeds
// (streamed, not kept, and said so); with the upstream down, what the bucket
// holds is served. In redirect mode, verified blobs are answered with a 307 to
// a presigned URL that skopeo and dockerd follow; a HEAD never is.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, pushImage, type PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get, streamDigest } from '../support/http.js';
import { rgwUnavailableReason, startRgw, type Rgw } from '../support/rgw.js';
import { dockerdUnavailableReason, startDockerd } from '../support/dockerd.js';
import { requirement } from '../support/requirements.js';
import { waitFor, waitForAsync } from '../support/wait.js';

const MiB = 1024 * 1024;
const BUCKET = 'stevedore-faults';
const rgwTools = requirement('Ceph RADOS Gateway', await rgwUnavailableReason());
const dockerdTools = requirement('dockerd', (await rgwUnavailableReason()) ?? (await dockerdUnavailableReason()));
const work = mkdtempSync(join(tmpdir(), 'stevedore-s3-faults-'));
let registry: RegistryHandle;
let hub: HubDouble;
let rgw: Rgw;
let image: PushedImage;
const running: MirrorProcess[] = [];

before(async () => {
  if (rgwTools.missing) return;
  registry = await startRegistry();
  image = await pushImage(registry.url, 'library/web', 'v1', { format: 'docker', layers: [400 * 1024, 7 * MiB] });
  hub = await startHubDouble({ upstream: registry.url });
  rgw = await startRgw();
  await rgw.createBucket(BUCKET);
});

after(async () => {
  for (const m of running) await m.stop();
  await hub?.stop();
  await registry?.stop();
  await rgw?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function mirrorOnS3(s3: Record<string, unknown> = {}): Promise<MirrorProcess> {
  const m = await startMirrorProcess({
    port: await freePort(),
    upstreams: [{ registry: 'docker.io', url: hub.url }],
    extra: { storage: { driver: 's3', s3: { bucket: BUCKET, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, partSize: '5MiB', requestTimeout: '3s', ...s3 } } },
  });
  running.push(m);
  return m;
}

const logLines = (m: MirrorProcess): Record<string, unknown>[] => m.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
const cachedIn = (m: MirrorProcess, digest: string): boolean => logLines(m).some((l) => l.msg === 'blob cached' && l.digest === digest);

async function uncachedCount(m: MirrorProcess): Promise<number> {
  const text = (await get(`${m.url}/metrics`)).body.toString();
  const line = text.split('\n').find((l) => l.startsWith('stevedore_blobs_uncached_total{upstream="docker.io",reason="store unavailable"}'));
  return line ? Number(line.split(' ').pop()) : 0;
}

rgwTools.test('the gateway stopped mid-pull: the client still gets the whole verified blob; nothing is kept, and a metric and a log line say so', async () => {
  const m = await mirrorOnS3();
  const blob = await pushBlob(registry.url, 'acme/outage', { size: 32 * MiB, seed: 'bucket-down-mid-pull' });
  hub.throttle(8 * MiB);
  try {
    const pull = streamDigest(`${m.url}/v2/acme/outage/blobs/${blob.digest}`);
    await waitForAsync('the upload to be under way', async () => (await rgw.uploads(BUCKET)).length > 0, 30_000);
    await rgw.stopGateway();
    hub.throttle(null);
    const got = await pull;
    assert.equal(got.status, 200);
    assert.equal(got.digest, blob.digest, 'the whole blob, verified');
  } finally {
    hub.throttle(null);
    await rgw.startGateway();
  }
  await waitFor('the fill to end', () => logLines(m).some((l) => l.digest === blob.digest && /not cached/.test(String(l.msg))), 30_000);
  assert.ok(logLines(m).some((l) => l.msg === 'the cache store cannot take this blob: streaming it to its clients without caching it' && l.level === 50));
  assert.ok(logLines(m).some((l) => l.msg === 'blob served but not cached: the cache store is unavailable'));
  assert.equal(await uncachedCount(m), 1);
  assert.ok(!(await rgw.keys(BUCKET)).some((k) => k.endsWith(blob.digest.slice(7))), 'no object');
});

rgwTools.test('the gateway stopped while idle: a cached image is served again from the upstream, uncached; with the upstream down and the gateway up, from the bucket', async () => {
  const m = await mirrorOnS3();
  const dest = (n: string): string => join(work, n);
  assert.equal((await skopeo(['copy', '--src-tls-verify=false', `docker://${m.url.replace('http://', '')}/library/web:v1`, `dir:${dest('web-1')}`])).code, 0);
  await waitFor('the layers in the bucket', () => image.layers.every((l) => cachedIn(m, l.digest)));
  await rgw.stopGateway();
  try {
    hub.resetStats();
    const during = await skopeo(['copy', '--src-tls-verify=false', `docker://${m.url.replace('http://', '')}/library/web:v1`, `dir:${dest('web-2')}`]);
    assert.equal(during.code, 0, during.stderr);
    assert.equal(readDirCopy(dest('web-2')).manifestDigest, image.manifestDigest);
    // The big layer could not be read from the bucket: it came from the upstream and went on uncached.
    assert.ok(hub.stats().blobGet >= 1, 'fetched from the upstream');
    assert.ok((await uncachedCount(m)) >= 1);
  } finally {
    await rgw.startGateway();
  }
  // The gateway is back and the upstream goes down: the bucket serves.
  await hub.down('refuse');
  try {
    const after = await skopeo(['copy', '--src-tls-verify=false', `docker://${m.url.replace('http://', '')}/library/web:v1`, `dir:${dest('web-3')}`]);
    assert.equal(after.code, 0, after.stderr);
    assert.equal(readDirCopy(dest('web-3')).manifestDigest, image.manifestDigest);
  } finally {
    await hub.up();
  }
});

rgwTools.test('redirect mode: a verified blob GET answers 307 to a presigned URL skopeo follows; a HEAD is answered in place', async () => {
  const m = await mirrorOnS3({ redirect: true, redirectExpiry: '2m' });
  const big = image.layers.at(-1)!;
  // The first read by this instance is its own: it verifies the object before it ever redirects to it.
  assert.equal((await streamDigest(`${m.url}/v2/library/web/blobs/${big.digest}`)).digest, big.digest);
  const res = await request(`${m.url}/v2/library/web/blobs/${big.digest}`, { maxRedirections: 0 } as Parameters<typeof request>[1]);
  await res.body.dump();
  assert.equal(res.statusCode, 307);
  const location = String(res.headers.location);
  assert.match(location, new RegExp(`^${rgw.endpoint}/${BUCKET}/blobs/sha256/${big.digest.slice(7, 9)}/${big.digest.slice(7)}\\?.*X-Amz-Signature=`));
  assert.equal(res.headers['docker-content-digest'], big.digest);
  assert.equal((await streamDigest(location)).digest, big.digest, 'the presigned URL serves the object');
  const head = await request(`${m.url}/v2/library/web/blobs/${big.digest}`, { method: 'HEAD' });
  await head.body.dump();
  assert.equal(head.statusCode, 200, 'a HEAD is never redirected: the URL is signed for GET');
  assert.equal(head.headers['content-length'], String(big.size));
  const dest = join(work, 'web-redirect');
  const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${m.url.replace('http://', '')}/library/web:v1`, `dir:${dest}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  assert.equal(readDirCopy(dest).manifestDigest, image.manifestDigest);
  const redirected = logLines(m).filter((l) => l.msg === 'request' && l.redirected === true).map((l) => l.digest);
  assert.ok(redirected.filter((d) => d === big.digest).length >= 2, 'skopeo was sent to the bucket for the big layer');
  // Names come first: one the mirror does not serve gets its error, not a URL.
  const denied = await get(`${m.url}/v2/other.example/x/blobs/${big.digest}`);
  assert.equal(denied.status, 404);
});

dockerdTools.test('redirect mode with dockerd: it follows the 307 to the bucket and the image is whole', async () => {
  const m = await mirrorOnS3({ redirect: true });
  const warm = await skopeo(['copy', '--src-tls-verify=false', `docker://${m.url.replace('http://', '')}/library/web:v1`, `dir:${join(work, 'web-warm')}`]);
  assert.equal(warm.code, 0, warm.stderr);
  const dockerd = await startDockerd({ mirrorUrl: m.url });
  try {
    const pull = await dockerd.docker(['pull', 'web:v1']);
    assert.equal(pull.code, 0, `${pull.stderr}\n${dockerd.logs().slice(-2000)}`);
    assert.equal((await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'web:v1'])).stdout.trim(), image.configDigest);
    const redirected = logLines(m).filter((l) => l.msg === 'request' && l.redirected === true);
    assert.ok(redirected.length >= 1, 'dockerd was sent to the bucket');
  } finally {
    await dockerd.stop();
  }
});
