// The cache lifecycle with real processes: kill -9 in the middle of a fill and
// a restart, and the warm / jobs / gc commands beside a running server, with a
// skopeo pull that the warm-up made free.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, pushIndex } from '../support/seed.js';
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

    const dry = await runCli(['gc', '--dry-run', '--config', server.configFile]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would free .* in \d+ blobs/);
  } finally {
    await server.stop();
  }
});
