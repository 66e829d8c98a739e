// The cache in an S3 bucket, end to end: Stevedore processes on a real Ceph
// RADOS Gateway, skopeo and dockerd pulling, a second instance on the same
// bucket, a crash mid-fill, a lying upstream, a tampered bucket, bad
// settings, and the keys kept out of everything a client or a log sees.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { pushBlob, pushImage } from '../support/seed.js';
import { runCli, startMirrorProcess, type MirrorProcess, type MirrorOptions } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get, streamDigest } from '../support/http.js';
import { rgwUnavailableReason, startRgw, type Rgw } from '../support/rgw.js';
import { dockerdUnavailableReason, startDockerd } from '../support/dockerd.js';
import { requirement } from '../support/requirements.js';
import { waitFor, waitForAsync } from '../support/wait.js';

const MiB = 1024 * 1024;
const BUCKET = 'stevedore-e2e';
const rgwTools = requirement('Ceph RADOS Gateway', await rgwUnavailableReason());
const dockerdTools = requirement('dockerd', (await rgwUnavailableReason()) ?? (await dockerdUnavailableReason()));
const work = mkdtempSync(join(tmpdir(), 'stevedore-s3-e2e-'));
let registry: RegistryHandle;
let hub: HubDouble;
let seed: StandardSeed;
let rgw: Rgw;
const running: MirrorProcess[] = [];
/** The logs of instances already stopped, for the secrets check. */
const retiredLogs: string[] = [];

async function retire(m: MirrorProcess): Promise<void> {
  retiredLogs.push(m.logs());
  running.splice(running.indexOf(m), 1);
  await m.stop();
}

before(async () => {
  if (rgwTools.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
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

const s3 = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  storage: {
    driver: 's3',
    s3: { bucket: BUCKET, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, partSize: '5MiB', ...extra },
  },
});

async function mirrorOnS3(options: Partial<MirrorOptions> & { s3?: Record<string, unknown> } = {}): Promise<MirrorProcess> {
  const { s3: s3Extra, extra, ...rest } = options;
  const m = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }], ...rest, extra: { ...s3(s3Extra), ...extra } });
  running.push(m);
  return m;
}

const keyOf = (digest: string): string => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;
const host = (m: MirrorProcess): string => m.url.replace('http://', '');
const alpineContent = (): string[] => [seed.alpine.manifestDigest, seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)];
let first: MirrorProcess;

rgwTools.test('skopeo pulls through Stevedore on S3: digests match, every object is in the bucket, and a second pull asks the upstream nothing', async () => {
  first = await mirrorOnS3();
  hub.resetStats();
  const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${host(first)}/library/alpine:3.19`, `dir:${join(work, 'alpine-1')}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  const copy = readDirCopy(join(work, 'alpine-1'));
  assert.equal(copy.manifestDigest, seed.alpine.manifestDigest);
  assert.equal(hub.stats().blobGet, 1 + seed.alpine.layers.length);
  await waitFor('every blob committed', () => seed.alpine.layers.every((l) => first.logs().includes(`"digest":"${l.digest}"`) && first.logs().split('\n').some((line) => line.includes('"msg":"blob cached"') && line.includes(l.digest))));
  const keys = await rgw.keys(BUCKET);
  for (const digest of alpineContent()) assert.ok(keys.includes(keyOf(digest)), `${digest} is in the bucket`);
  assert.deepEqual(await rgw.uploads(BUCKET), [], 'no upload left open');

  hub.resetStats();
  const again = await skopeo(['copy', '--src-tls-verify=false', `docker://${host(first)}/library/alpine:3.19`, `dir:${join(work, 'alpine-2')}`]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(readDirCopy(join(work, 'alpine-2')).manifestDigest, seed.alpine.manifestDigest);
  const stats = hub.stats();
  assert.equal(stats.blobGet + stats.blobHead + stats.manifestGet + stats.manifestHead + stats.tokens, 0, 'zero upstream requests');
});

rgwTools.test('a second instance with an empty cache.dir on the same bucket serves the image with no upstream GET', async () => {
  const second = await mirrorOnS3();
  hub.resetStats();
  const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${host(second)}/library/alpine:3.19`, `dir:${join(work, 'alpine-3')}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  assert.equal(readDirCopy(join(work, 'alpine-3')).manifestDigest, seed.alpine.manifestDigest);
  const stats = hub.stats();
  assert.equal(stats.blobGet, 0, 'no blob downloaded again');
  assert.equal(stats.manifestGet, 0, 'no manifest downloaded again');
  // What it asked instead: the tag's digest, and whether the repository holds each blob (HEADs are free on Docker Hub).
  assert.equal(stats.manifestHead, 1);
  assert.equal(stats.blobHead, 1 + seed.alpine.layers.length);
  await retire(second);
});

dockerdTools.test('dockerd pulls through Stevedore on S3; after rmi the re-pull costs nothing upstream', async () => {
  const image = await pushImage(registry.url, 'library/s3-tools', 'v1', { format: 'docker', layers: [700 * 1024, 6 * MiB] });
  const dockerd = await startDockerd({ mirrorUrl: first.url });
  try {
    hub.resetStats();
    const pull = await dockerd.docker(['pull', 's3-tools:v1']);
    assert.equal(pull.code, 0, `${pull.stderr}\n${dockerd.logs().slice(-2000)}`);
    assert.equal((await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 's3-tools:v1'])).stdout.trim(), image.configDigest);
    assert.equal(hub.stats().blobGet, 1 + image.layers.length);
    await waitFor('the layers in the bucket', () => first.logs().split('\n').filter((l) => l.includes('"msg":"blob cached"') && image.layers.some((x) => l.includes(x.digest))).length === image.layers.length);
    assert.equal((await dockerd.docker(['rmi', 's3-tools:v1'])).code, 0);
    hub.resetStats();
    const again = await dockerd.docker(['pull', 's3-tools:v1']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(hub.stats().blobGet + hub.stats().manifestGet, 0);
  } finally {
    await dockerd.stop();
  }
});

rgwTools.test('kill -9 in the middle of a fill: no object under the key, the upload is aborted at restart, and the re-pull works', async () => {
  const big = await pushBlob(registry.url, 'acme/crash', { size: 24 * MiB, seed: 's3-crash' });
  const dir = join(work, 'crash-cache');
  const m = await mirrorOnS3({ dir });
  hub.throttle(4 * MiB);
  try {
    const pull = request(`${m.url}/v2/acme/crash/blobs/${big.digest}`).then((r) => r.body.dump(), () => undefined);
    // Open at the gateway and noted in the journal: a crash between the two is left to the one-day sweep.
    await waitForAsync('a multipart upload to be open and journalled', async () => {
      const open = (await rgw.uploads(BUCKET)).find((u) => u.key === keyOf(big.digest));
      return open !== undefined && existsSync(join(dir, 's3-uploads.json')) && readFileSync(join(dir, 's3-uploads.json'), 'utf8').includes(open.uploadId);
    }, 30_000);
    await m.crash();
    retiredLogs.push(m.logs());
    running.splice(running.indexOf(m), 1);
    await pull;
  } finally {
    hub.throttle(null);
  }
  assert.ok(!(await rgw.keys(BUCKET)).includes(keyOf(big.digest)), 'nothing visible under the blob key');
  assert.ok((await rgw.uploads(BUCKET)).some((u) => u.key === keyOf(big.digest)), 'the crash left its upload open');
  const restarted = await mirrorOnS3({ dir });
  assert.deepEqual(await rgw.uploads(BUCKET), [], 'the restart aborted it');
  assert.ok(restarted.logs().split('\n').some((l) => l.includes('"msg":"cache recovered"') && l.includes('"sweptTempFiles":1')), 'one upload swept');
  const again = await streamDigest(`${restarted.url}/v2/acme/crash/blobs/${big.digest}`);
  assert.equal(again.digest, big.digest);
  await waitFor('the blob in the bucket', () => restarted.logs().split('\n').some((l) => l.includes('"msg":"blob cached"') && l.includes(big.digest)));
  assert.ok((await rgw.keys(BUCKET)).includes(keyOf(big.digest)));
});

rgwTools.test('a reader far behind a fill reads the local spool back at once; with the spool broken the fill still lands in the bucket', async () => {
  const m = await mirrorOnS3();
  const blob = await pushBlob(registry.url, 'acme/spooled', { size: 24 * MiB, seed: 's3-spool' });
  const url = `${m.url}/v2/acme/spooled/blobs/${blob.digest}`;
  hub.throttle(6 * MiB);
  let late: Promise<{ digest: string; firstByteAt: number; endedAt: number }> | undefined;
  try {
    // The first reader drives the fill; the second starts 12 MiB behind it, past the fill's memory.
    let firstBytes = 0;
    const leader = (async () => {
      const res = await request(url);
      const chunks: Buffer[] = [];
      for await (const chunk of res.body) {
        chunks.push(chunk as Buffer);
        firstBytes += (chunk as Buffer).length;
        if (!late && firstBytes >= 12 * MiB) late = streamDigest(url);
      }
      return { status: res.statusCode, bytes: Buffer.concat(chunks), endedAt: Date.now() };
    })();
    const led = await leader;
    assert.equal(led.status, 200);
    assert.equal(led.bytes.length, blob.size);
    const followed = await late!;
    assert.equal(followed.digest, blob.digest);
    assert.ok(followed.firstByteAt < led.endedAt, 'the late reader got bytes before the fill ended: from the spool, not the finished object');
  } finally {
    hub.throttle(null);
  }
  await waitForAsync('the object in the bucket', async () => (await rgw.keys(BUCKET)).includes(keyOf(blob.digest)));

  // A spool that cannot be written (here, its temp directory is a file) costs the fill nothing.
  rmSync(join(m.dir, 'spool', 'tmp'), { recursive: true, force: true });
  writeFileSync(join(m.dir, 'spool', 'tmp'), 'not a directory');
  const other = await pushBlob(registry.url, 'acme/spooled', { size: 7 * MiB, seed: 's3-spool-broken' });
  const pulled = await streamDigest(`${m.url}/v2/acme/spooled/blobs/${other.digest}`);
  assert.equal(pulled.status, 200);
  assert.equal(pulled.digest, other.digest);
  await waitForAsync('the object in the bucket', async () => (await rgw.keys(BUCKET)).includes(keyOf(other.digest)));
  assert.ok(m.logs().includes('local spool of a fill failed; the fill goes on into the bucket alone'));
  await retire(m);
});

rgwTools.test('a corrupting upstream: the client never gets a complete body, and no object appears', async () => {
  const blob = await pushBlob(registry.url, 'acme/liar', { size: 12 * MiB, seed: 's3-corrupt' });
  hub.corruptBlob(blob.digest);
  try {
    let received = 0;
    await assert.rejects(async () => {
      const res = await request(`${first.url}/v2/acme/liar/blobs/${blob.digest}`);
      for await (const chunk of res.body) received += (chunk as Buffer).length;
    });
    assert.ok(received < blob.size);
  } finally {
    hub.clearFaults();
  }
  await waitFor('the failed fill', () => first.logs().split('\n').some((l) => l.includes('"msg":"blob fill failed; nothing cached"') && l.includes(blob.digest)));
  assert.ok(!(await rgw.keys(BUCKET)).includes(keyOf(blob.digest)));
  assert.deepEqual((await rgw.uploads(BUCKET)).filter((u) => u.key === keyOf(blob.digest)), [], 'its upload was aborted');
});

rgwTools.test('an object tampered with in the bucket is never served as valid: found on first read, removed, and fetched again', async () => {
  const blob = await pushBlob(registry.url, 'acme/tamper', { size: 3 * MiB, seed: 's3-tamper' });
  assert.equal((await streamDigest(`${first.url}/v2/acme/tamper/blobs/${blob.digest}`)).digest, blob.digest);
  await waitFor('the blob in the bucket', () => first.logs().split('\n').some((l) => l.includes('"msg":"blob cached"') && l.includes(blob.digest)));
  // Same size, one byte flipped, behind Stevedore's back.
  const stored = Buffer.from(await (await rgw.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: keyOf(blob.digest) }))).Body!.transformToByteArray());
  stored[12345] = stored[12345]! ^ 0xff;
  await rgw.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: keyOf(blob.digest), Body: stored }));
  // A fresh instance has not read it yet: it re-hashes on the first read.
  const fresh = await mirrorOnS3();
  let received = 0;
  await assert.rejects(async () => {
    const res = await request(`${fresh.url}/v2/acme/tamper/blobs/${blob.digest}`);
    for await (const chunk of res.body) received += (chunk as Buffer).length;
  });
  assert.ok(received < blob.size, 'never a complete response');
  await waitFor('the damaged object to be reported', () => fresh.logs().includes('damaged blob removed from the cache'));
  hub.resetStats();
  const again = await streamDigest(`${fresh.url}/v2/acme/tamper/blobs/${blob.digest}`);
  assert.equal(again.digest, blob.digest);
  assert.equal(hub.stats().blobGet, 1, 'fetched again from the upstream');
  await retire(fresh);
});

rgwTools.test('lifecycle on S3: the quota counts bucket bytes and eviction deletes objects; verify re-hashes objects and --repair removes a damaged one', async () => {
  const prefix = 'lifecycle/';
  const m = await mirrorOnS3({ s3: { prefix }, cache: { maxSize: '5MiB', lowWater: 0.5 } });
  const blobs = [];
  for (const n of [1, 2, 3]) {
    const b = await pushBlob(registry.url, 'acme/quota', { size: 2 * MiB, seed: `s3-quota-${n}` });
    assert.equal((await streamDigest(`${m.url}/v2/acme/quota/blobs/${b.digest}`)).digest, b.digest);
    await waitFor('committed', () => m.logs().split('\n').some((l) => l.includes('"msg":"blob cached"') && l.includes(b.digest)));
    blobs.push(b);
  }
  await waitFor('a quota sweep', () => m.logs().split('\n').some((l) => l.includes('"msg":"cache sweep removed blobs"') && l.includes('"quota"')));
  const keys = await rgw.keys(BUCKET, prefix);
  assert.ok(!keys.includes(`${prefix}${keyOf(blobs[0]!.digest)}`), 'the least recently used object was deleted from the bucket');
  assert.ok(keys.includes(`${prefix}${keyOf(blobs[2]!.digest)}`), 'the newest stays');

  const clean = await runCli(['verify', '--config', m.configFile]);
  assert.equal(clean.code, 0, clean.stdout + clean.stderr);
  assert.match(clean.stdout, /checked \d+ blobs .*: 0 damaged/);
  const victim = blobs[2]!;
  const stored = Buffer.from(await (await rgw.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}${keyOf(victim.digest)}` }))).Body!.transformToByteArray());
  stored[7] = stored[7]! ^ 0xff;
  await rgw.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${prefix}${keyOf(victim.digest)}`, Body: stored }));
  const found = await runCli(['verify', '--repair', '--config', m.configFile]);
  assert.match(found.stdout, new RegExp(`damaged ${victim.digest}`));
  assert.match(found.stdout, /1 damaged, 1 removed/);
  assert.ok(!(await rgw.keys(BUCKET, prefix)).includes(`${prefix}${keyOf(victim.digest)}`), 'removed from the bucket');
  await retire(m);
});

rgwTools.test('bad settings stop the start with an error naming the key: a missing bucket, wrong keys, an unreachable gateway', async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ bucket: 'no-such-bucket' }, /storage\.s3\.bucket: bucket "no-such-bucket" does not exist/],
    [{ secretAccessKey: 'wrong-secret' }, /storage\.s3\.accessKeyId \/ storage\.s3\.secretAccessKey: .* refused them/],
    [{ endpoint: `http://127.0.0.1:${await freePort()}` }, /storage\.s3\.endpoint: cannot reach http:\/\/127\.0\.0\.1:\d+/],
  ];
  for (const [settings, message] of cases) {
    await assert.rejects(startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }], extra: s3(settings) }), (err: Error) => {
      assert.match(err.message, message);
      assert.doesNotMatch(err.message, /wrong-secret|stevedore-test-secret/, 'no secret in the error');
      return true;
    });
  }
});

rgwTools.test('the S3 keys appear in no log line, error body, /metrics or /api answer', async () => {
  const texts = [...retiredLogs, ...running.map((m) => m.logs())];
  texts.push((await get(`${first.url}/metrics`)).body.toString());
  for (const path of ['/api/stats', '/api/upstreams', '/api/images', '/api/jobs']) texts.push((await get(`${first.url}${path}`)).body.toString());
  texts.push((await get(`${first.url}/v2/library/alpine/blobs/sha256:${'0'.repeat(64)}`)).body.toString());
  for (const text of texts) {
    assert.ok(!text.includes(rgw.secretAccessKey), 'the secret key leaked');
    assert.ok(!text.includes(rgw.accessKeyId), 'the access key leaked');
  }
});
