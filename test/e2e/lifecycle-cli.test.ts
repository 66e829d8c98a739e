// The cache lifecycle with real processes: kill -9 in the middle of a fill and
// a restart, and the warm / jobs / gc commands beside a running server, with a
// skopeo pull that the warm-up made free.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, pushImage, pushIndex } from '../support/seed.js';
import { runCli, startMirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { streamDigest } from '../support/http.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
let registry: RegistryHandle;
let hub: HubDouble;
const scratch = mkdtempSync(join(tmpdir(), 'stevedore-lifecycle-e2e-'));

before(async () => {
  registry = await startRegistry();
  hub = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  await hub?.stop();
  await registry?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

test('kill -9 in the middle of a fill: after a restart nothing partial is indexed or served, and a new pull succeeds', async () => {
  const blob = await pushBlob(registry.url, 'crash/big', { size: 48 * MiB, seed: 'crash-me' });
  const dir = join(scratch, 'crash-cache');
  const upstreams = [{ registry: 'docker.io', url: hub.url }];
  const first = await startMirrorProcess({ port: await freePort(), upstreams, dir });
  const tmp = join(dir, 'tmp');
  const blobFile = join(dir, 'blobs', 'sha256', blob.digest.slice(7, 9), blob.digest.slice(7));
  hub.throttle(8 * MiB);
  try {
    const res = await request(`${first.url}/v2/crash/big/blobs/${blob.digest}`);
    let received = 0;
    const reading = (async () => {
      for await (const chunk of res.body) received += (chunk as Buffer).length;
    })().catch(() => undefined);
    await waitFor('a few MiB of the fill', () => received > 4 * MiB, 20_000);
    assert.equal(readdirSync(tmp).length, 1, 'a temp file is being filled');
    await first.crash();
    await reading;
    assert.ok(received < blob.size, 'the crash cut the transfer');
  } finally {
    hub.throttle(null);
  }
  assert.equal(readdirSync(tmp).length, 1, 'the orphan temp file is still there before the restart');
  hub.resetStats();
  const second = await startMirrorProcess({ port: await freePort(), upstreams, dir });
  try {
    assert.deepEqual(readdirSync(tmp), [], 'the restart swept the orphan temp file');
    assert.ok(!existsSync(blobFile), 'no partial blob in place');
    assert.match(second.logs(), /"sweptTempFiles":1/);
    const head = await request(`${second.url}/v2/crash/big/blobs/${blob.digest}`, { method: 'HEAD' });
    await head.body.dump();
    assert.equal(hub.stats().blobHead, 1, 'not served from the cache: the HEAD went upstream');
    const pulled = await streamDigest(`${second.url}/v2/crash/big/blobs/${blob.digest}`);
    assert.equal(pulled.digest, blob.digest);
    assert.equal(pulled.bytes, blob.size);
    await waitFor('the blob to be cached', () => existsSync(blobFile));
  } finally {
    await second.stop();
    await first.stop(); // already gone; this removes its work directory
  }
});

test('the index lost: a restart serves at once, adopts the cached files in the background, and the next pull costs no upstream blob request', async () => {
  const image = await pushImage(registry.url, 'library/lost-index', 'v1', { format: 'oci', layers: [300 * 1024, 5 * MiB] });
  const dir = join(scratch, 'lost-index');
  const upstreams = [{ registry: 'docker.io', url: hub.url }];
  const first = await startMirrorProcess({ port: await freePort(), upstreams, dir });
  const pull = async (url: string, dest: string): Promise<void> => {
    const copy = await skopeo(['copy', '--src-tls-verify=false', `docker://${url.replace('http://', '')}/library/lost-index:v1`, `dir:${dest}`]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(readDirCopy(dest).manifestDigest, image.manifestDigest);
  };
  try {
    await pull(first.url, join(scratch, 'lost-index-1'));
    const digests = [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)];
    await waitFor('the image to be cached', () => digests.every((digest) => existsSync(blobFileIn(dir, digest))));
  } finally {
    await first.stop();
  }
  for (const suffix of ['', '-wal', '-shm']) rmSync(join(dir, `index.db${suffix}`), { force: true });
  // Beside the good files: one whose bytes do not match its name, and a stray name.
  const damaged = `sha256:${'ab'.repeat(32)}`;
  mkdirSync(join(dir, 'blobs', 'sha256', 'ab'), { recursive: true });
  writeFileSync(blobFileIn(dir, damaged), 'not what the name says');
  writeFileSync(join(dir, 'blobs', 'sha256', 'ab', 'stray.txt'), 'left by hand');
  const stored = readdirSync(join(dir, 'blobs', 'sha256'), { recursive: true }).filter((name) => /[0-9a-f]{64}$/.test(String(name))).length;
  hub.resetStats();
  const second = await startMirrorProcess({ port: await freePort(), upstreams, dir });
  try {
    await waitFor('the background reconcile to end', () => second.logs().includes('"cache reconciled"'));
    const reconciled = second
      .logs()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'cache reconciled')!;
    assert.equal(reconciled.adoptedFiles, stored - 1, 'every good file was adopted');
    assert.equal(reconciled.removedFiles, 2, 'the damaged file and the stray name were removed');
    assert.equal(reconciled.droppedEntries, 0);
    assert.ok(!existsSync(blobFileIn(dir, damaged)));
    await pull(second.url, join(scratch, 'lost-index-2'));
    assert.equal(hub.stats().blobGet, 0, 'the layers and the config came from the adopted files');
  } finally {
    await second.stop();
  }
});

test('stevedore warm through a running server, then a skopeo pull of that platform costs no blob request; jobs and gc --dry-run', async () => {
  const multi = await pushIndex(registry.url, 'library/tools', 'stable', {
    platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }],
    format: 'oci',
    layers: [300 * 1024, 200 * 1024],
  });
  const server = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }] });
  try {
    hub.resetStats();
    const warm = await runCli(['warm', 'tools:stable', '--platform', 'linux/arm64', '--pin', '--name', 'tools', '--config', server.configFile]);
    assert.equal(warm.code, 0, warm.stderr + warm.stdout);
    const arm = multi.children['linux/arm64']!;
    assert.match(warm.stdout, new RegExp(`succeeded: 1 images, 2 manifests, ${arm.layers.length + 1} blobs fetched`));
    assert.match(warm.stderr, /warm-up: \d+\/\d+ blobs/, 'plain progress lines when not on a terminal');
    assert.equal(hub.stats().blobGet, arm.layers.length + 1);
    assert.match(server.logs(), /"msg":"warm-up finished"/, 'the server ran it');

    hub.resetStats();
    const dest = join(scratch, 'tools-arm64');
    const copy = await skopeo(['copy', '--src-tls-verify=false', '--override-os', 'linux', '--override-arch', 'arm64', `docker://${server.url.replace('http://', '')}/library/tools:stable`, `dir:${dest}`]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(readDirCopy(dest).manifestDigest, arm.manifestDigest);
    assert.equal(hub.stats().blobGet, 0, 'zero upstream blob requests');

    const jobs = await runCli(['jobs', '--config', server.configFile]);
    assert.equal(jobs.code, 0, jobs.stderr);
    assert.match(jobs.stdout, /\ttools\tapi\t.*\tsucceeded\t1\t3\t0\t/);
    const asJson = await runCli(['jobs', '--json', '--config', server.configFile]);
    assert.equal(asJson.code, 0, asJson.stderr);
    const runs = asJson.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const tools = runs.find((r) => r.job === 'tools');
    assert.deepEqual(
      { trigger: tools?.trigger, status: tools?.status, images: tools?.images, blobsFetched: tools?.blobsFetched, blobsSkipped: tools?.blobsSkipped, errors: tools?.errors },
      { trigger: 'api', status: 'succeeded', images: 1, blobsFetched: 3, blobsSkipped: 0, errors: [] },
    );

    const dry = await runCli(['gc', '--dry-run', '--config', server.configFile]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would free .* in \d+ blobs/);
  } finally {
    await server.stop();
  }
});

const blobFileIn = (dir: string, digest: string): string => join(dir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
/** Whether the server logged the blob as cached: indexed, which follows the last byte sent. */
const cachedIn = (server: { logs(): string }, digest: string): boolean => server.logs().split('\n').some((l) => l.includes('"msg":"blob cached"') && l.includes(digest));

test('stevedore warm without a server, its config from STEVEDORE_CONFIG; a server started on that cache then serves the image with no upstream blob request', async () => {
  const image = await pushImage(registry.url, 'library/offline', 'v1', { format: 'docker', layers: [150 * 1024] });
  const dir = join(scratch, 'warm-alone');
  const configFile = join(scratch, 'warm-alone.yml');
  writeFileSync(configFile, `cache:\n  dir: ${JSON.stringify(dir)}\nupstreams:\n  - registry: docker.io\n    endpoints: [{ url: "${hub.url}" }]\n`);
  hub.resetStats();
  const warm = await runCli(['warm', 'offline:v1'], { env: { STEVEDORE_CONFIG: configFile } });
  assert.equal(warm.code, 0, warm.stderr + warm.stdout);
  assert.match(warm.stdout, /succeeded: 1 images, 1 manifests, 2 blobs fetched/);
  assert.equal(hub.stats().blobGet, 2);
  assert.ok(existsSync(blobFileIn(dir, image.layers[0]!.digest)), 'the layer is in the cache directory the config names');
  const server = await startMirrorProcess({ port: await freePort(), dir, upstreams: [{ registry: 'docker.io', url: hub.url }] });
  try {
    hub.resetStats();
    const dest = join(scratch, 'offline');
    const copy = await skopeo(['copy', '--src-tls-verify=false', `docker://${server.url.replace('http://', '')}/library/offline:v1`, `dir:${dest}`]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(readDirCopy(dest).manifestDigest, image.manifestDigest);
    assert.equal(hub.stats().blobGet, 0);
  } finally {
    await server.stop();
  }
});

test('gc for real: through the CLI with no server, and through the admin API (and the CLI on it) beside a running server', async () => {
  const dir = join(scratch, 'gc');
  const settings = { gcGrace: '0s' };
  const stray = await pushBlob(registry.url, 'gc/blob', { size: 300 * 1024, seed: 'unreferenced-1' });
  const server = await startMirrorProcess({ port: await freePort(), dir, cache: settings, upstreams: [{ registry: 'docker.io', url: hub.url }] });
  assert.equal((await streamDigest(`${server.url}/v2/gc/blob/blobs/${stray.digest}`)).digest, stray.digest);
  await waitFor('the fill committed', () => cachedIn(server, stray.digest));
  const configFile = join(scratch, 'gc-kept.yml');
  writeFileSync(configFile, readFileSync(server.configFile));
  await server.stop();
  // No server: the CLI opens the cache itself. A layer no cached manifest refers to is collected.
  const alone = await runCli(['gc', '--config', configFile]);
  assert.equal(alone.code, 0, alone.stderr);
  assert.match(alone.stdout, new RegExp(`removed ${stray.digest} 300\\.0 KiB \\(unreferenced\\)`));
  assert.match(alone.stdout, /freed 300\.0 KiB in 1 blobs/);
  assert.ok(!existsSync(blobFileIn(dir, stray.digest)));

  const again = await startMirrorProcess({ port: await freePort(), dir, cache: settings, upstreams: [{ registry: 'docker.io', url: hub.url }] });
  try {
    const second = await pushBlob(registry.url, 'gc/blob', { size: 200 * 1024, seed: 'unreferenced-2' });
    const third = await pushBlob(registry.url, 'gc/blob', { size: 100 * 1024, seed: 'unreferenced-3' });
    for (const b of [second, third]) assert.equal((await streamDigest(`${again.url}/v2/gc/blob/blobs/${b.digest}`)).digest, b.digest);
    // The last byte goes out at verification; the blob is indexed just after.
    await waitFor('both fills committed', () => [second, third].every((b) => cachedIn(again, b.digest)));
    const api = await request(`${again.url}/api/gc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const report = (await api.body.json()) as { removed: { digest: string; reason: string }[]; bytes: number; dryRun: boolean };
    assert.equal(api.statusCode, 200);
    assert.deepEqual(report.removed.map((r) => r.digest).sort(), [second.digest, third.digest].sort());
    assert.equal(report.bytes, 300 * 1024);
    assert.equal(report.dryRun, false);
    // The CLI beside the server goes through the API: nothing left to collect.
    const viaServer = await runCli(['gc', '--config', again.configFile]);
    assert.equal(viaServer.code, 0, viaServer.stderr);
    assert.match(viaServer.stdout, /freed 0 B in 0 blobs/);
    assert.match(again.logs(), /"msg":"cache sweep removed blobs"/, 'the server ran the sweep');
  } finally {
    await again.stop();
  }
});

test('verify --repair beside a running server removes a damaged blob, and the server fetches it again, whole, once', async () => {
  const blob = await pushBlob(registry.url, 'verify/blob', { size: 2 * MiB, seed: 'damaged-beside-a-server' });
  const server = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }] });
  try {
    const url = `${server.url}/v2/verify/blob/blobs/${blob.digest}`;
    assert.equal((await streamDigest(url)).digest, blob.digest);
    await waitFor('the blob on disk', () => existsSync(blobFileIn(server.dir, blob.digest)));
    // One byte flipped on disk, same size.
    const file = blobFileIn(server.dir, blob.digest);
    const bytes = readFileSync(file);
    bytes[1000] = bytes[1000]! ^ 0xff;
    writeFileSync(file, bytes);
    const found = await runCli(['verify', '--config', server.configFile]);
    assert.equal(found.code, 1, found.stdout + found.stderr);
    assert.match(found.stdout, new RegExp(`damaged ${blob.digest}`));
    const repaired = await runCli(['verify', '--repair', '--config', server.configFile]);
    assert.equal(repaired.code, 0, repaired.stdout + repaired.stderr);
    assert.match(repaired.stdout, /1 damaged, 1 removed/);
    assert.ok(!existsSync(file));
    hub.resetStats();
    const fresh = await streamDigest(url);
    assert.equal(fresh.digest, blob.digest, 'the server noticed the removal and fetched the blob again');
    assert.equal(hub.stats().blobGet, 1);
    const clean = await runCli(['verify', '--config', server.configFile]);
    assert.match(clean.stdout, /0 damaged/);
  } finally {
    await server.stop();
  }
});

test('last-access times survive a restart: after it, least recently used still means what it meant before', async () => {
  const dir = join(scratch, 'access');
  const older = await pushBlob(registry.url, 'access/blob', { size: 600 * 1024, seed: 'used-long-ago' });
  const newer = await pushBlob(registry.url, 'access/blob', { size: 600 * 1024, seed: 'used-lately' });
  const first = await startMirrorProcess({ port: await freePort(), dir, upstreams: [{ registry: 'docker.io', url: hub.url }] });
  try {
    assert.equal((await streamDigest(`${first.url}/v2/access/blob/blobs/${older.digest}`)).digest, older.digest);
    assert.equal((await streamDigest(`${first.url}/v2/access/blob/blobs/${newer.digest}`)).digest, newer.digest);
    // The newer one is read again: its last access is well after the older one's.
    await waitFor('the two fills to land', () => existsSync(blobFileIn(dir, newer.digest)) && existsSync(blobFileIn(dir, older.digest)));
    assert.equal((await streamDigest(`${first.url}/v2/access/blob/blobs/${newer.digest}`)).digest, newer.digest);
  } finally {
    await first.stop(); // flushes the batched access times
  }
  const index = new Database(join(dir, 'index.db'), { readonly: true });
  const access = (digest: string): { lastAccess: number; hits: number } => index.prepare('SELECT last_access AS lastAccess, hits FROM blobs WHERE digest = ?').get(digest) as { lastAccess: number; hits: number };
  const before = { older: access(older.digest), newer: access(newer.digest) };
  index.close();
  assert.ok(before.newer.lastAccess > before.older.lastAccess);
  assert.ok(before.newer.hits >= 1, 'the hit was recorded');
  // A quota that only one of them fits: the sweep after the restart evicts the older.
  const second = await startMirrorProcess({ port: await freePort(), dir, cache: { maxSize: '1MiB', lowWater: 0.99 }, upstreams: [{ registry: 'docker.io', url: hub.url }] });
  try {
    const gc = await runCli(['gc', '--config', second.configFile]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, new RegExp(`removed ${older.digest} .* \\(quota\\)`));
    assert.doesNotMatch(gc.stdout, new RegExp(newer.digest));
  } finally {
    await second.stop();
  }
});
