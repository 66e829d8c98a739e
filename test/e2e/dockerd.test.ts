// End to end with dockerd, the client this mirror exists for: a real daemon
// with registry-mirrors pointing at a Stevedore process, kept on the loopback.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { dockerdUnavailableReason, startDockerd, type DockerdHandle } from '../support/dockerd.js';
import { requirement } from '../support/requirements.js';

const dockerdTools = requirement('dockerd', await dockerdUnavailableReason());
let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
let dockerd: DockerdHandle;
let seed: StandardSeed;

before(async () => {
  if (dockerdTools.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }] });
  dockerd = await startDockerd({ mirrorUrl: mirror.url });
});

after(async () => {
  await dockerd?.stop();
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

interface LogLine {
  path?: string;
  msg?: string;
  method?: string;
  digest?: string;
  cache?: string;
  status?: number;
}

const requestLines = (): LogLine[] =>
  mirror
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => l.msg === 'request');

dockerdTools.test('dockerd pulls a multi-layer image through the mirror, and the re-pull is served from the cache', async () => {
  const layers = seed.alpine.layers.map((l) => l.digest);
  assert.ok(layers.length >= 3, 'a multi-layer image');
  hub.resetStats();
  const pull = await dockerd.docker(['pull', 'alpine:3.19']);
  assert.equal(pull.code, 0, `docker pull failed: ${pull.stderr}\n${dockerd.logs().slice(-3000)}`);
  const id = await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'alpine:3.19']);
  assert.equal(id.stdout.trim(), seed.alpine.configDigest, 'the image id is the upstream config digest');
  const repoDigests = await dockerd.docker(['image', 'inspect', '--format', '{{join .RepoDigests ","}}', 'alpine:3.19']);
  assert.equal(repoDigests.stdout.trim(), `alpine@${seed.alpine.manifestDigest}`);
  const cold = hub.stats();
  assert.equal(cold.blobGet, layers.length + 1, 'config and every layer fetched from upstream once');
  const coldLines = requestLines().filter((l) => l.method === 'GET' && layers.includes(l.digest ?? ''));
  assert.deepEqual(coldLines.map((l) => l.cache), layers.map(() => 'miss'));

  // Remove the image so that dockerd really pulls again.
  assert.equal((await dockerd.docker(['rmi', 'alpine:3.19'])).code, 0);
  hub.resetStats();
  const before = requestLines().length;
  const again = await dockerd.docker(['pull', 'alpine:3.19']);
  assert.equal(again.code, 0, again.stderr);
  const warm = hub.stats();
  assert.equal(warm.blobGet, 0, 'no upstream blob request on the re-pull');
  assert.equal(warm.manifestGet, 0, 'no upstream manifest GET on the re-pull');
  const warmLines = requestLines().slice(before);
  const blobHits = warmLines.filter((l) => l.method === 'GET' && [...layers, seed.alpine.configDigest].includes(l.digest ?? ''));
  assert.equal(blobHits.length, layers.length + 1, 'dockerd fetched every blob from the mirror again');
  assert.ok(blobHits.every((l) => l.cache === 'hit' && l.status === 200), JSON.stringify(blobHits));
  const id2 = await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'alpine:3.19']);
  assert.equal(id2.stdout.trim(), seed.alpine.configDigest);
});

dockerdTools.test('a missing image fails fast: the mirror answers 404 and the fallback to Docker Hub cannot leave the machine', async () => {
  hub.resetStats();
  const pull = await dockerd.docker(['pull', 'nosuch/thing:1'], { timeoutMs: 60_000 });
  assert.notEqual(pull.code, 0);
  const asked = requestLines().filter((l) => l.status === 404 && l.path?.includes('/v2/nosuch/thing/manifests/1'));
  assert.ok(asked.length >= 1, 'dockerd asked the mirror first');
  assert.ok(hub.stats().manifestHead + hub.stats().manifestGet >= 1, 'the mirror asked its upstream');
  // The fallback to Docker Hub went to the closed loopback proxy and was refused there.
  assert.match(pull.stderr, new RegExp(`registry-1\\.docker\\.io.*proxyconnect tcp: dial tcp 127\\.0\\.0\\.1:${dockerd.proxyPort}: connect: connection refused`));
});

dockerdTools.test('dockerd pulls a multi-arch image: the index resolves to this machine\'s platform, and only that platform\'s blobs are fetched', async () => {
  const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
  const other = arch === 'amd64' ? 'arm64' : 'amd64';
  const mine = seed.busybox.children[`linux/${arch}`]!;
  const theirs = seed.busybox.children[`linux/${other}`]!;
  hub.resetStats();
  const pull = await dockerd.docker(['pull', 'busybox:multi']);
  assert.equal(pull.code, 0, `docker pull failed: ${pull.stderr}\n${dockerd.logs().slice(-3000)}`);
  const id = await dockerd.docker(['image', 'inspect', '--format', '{{.Id}} {{.Architecture}} {{index .RepoDigests 0}}', 'busybox:multi']);
  assert.equal(id.stdout.trim(), `${mine.configDigest} ${arch} busybox@${seed.busybox.indexDigest}`, 'the image is this platform\'s, recorded under the index digest');
  const fetched = hub.stats().requests.filter((r) => r.kind === 'blobGet').map((r) => r.path.split('/').pop());
  assert.deepEqual(fetched.sort(), [mine.configDigest, ...mine.layers.map((l) => l.digest)].sort(), 'exactly this platform\'s blobs, once each');
  assert.ok(!fetched.includes(theirs.configDigest));

  // The other platform on request: served from the cached index, its own blobs fetched once.
  hub.resetStats();
  const armPull = await dockerd.docker(['pull', '--platform', `linux/${other}`, 'busybox:multi']);
  assert.equal(armPull.code, 0, armPull.stderr);
  const armId = await dockerd.docker(['image', 'inspect', '--format', '{{.Id}} {{.Architecture}}', 'busybox:multi']);
  assert.equal(armId.stdout.trim(), `${theirs.configDigest} ${other}`);
  assert.equal(hub.stats().manifestGet, 1, 'only the other platform\'s manifest was fetched; the index came from the cache');
});
