// End to end with podman: a registries.conf mirror entry per registry, the way podman and CRI-O use
// mirrors. podman asks the mirror with the repository name only (no ?ns=): Docker Hub images map to
// the default registry, other registries are named by a path prefix in the mirror's location.
// Its fallback to the real registry cannot leave the machine (resolver on 127.0.0.1, closed proxy),
// so a successful pull was served by the mirror.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import type { PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { mirrorRegistriesConf, podmanUnavailableReason, startPodman, type PodmanHandle, type PodmanResult } from '../support/podman.js';
import { requirement } from '../support/requirements.js';

const podmanTools = requirement('podman', await podmanUnavailableReason());
const ALPINE = 'docker.io/library/alpine:3.19';
const BUSYBOX = 'docker.io/library/busybox:multi';
const APP = 'registry.example.com/acme/app:v1';

let registry: RegistryHandle | undefined;
let hub: HubDouble | undefined;
let mirror: MirrorProcess | undefined;
let podman: PodmanHandle | undefined;
let seed: StandardSeed;

before(async () => {
  if (podmanTools.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirrorProcess({
    port: await freePort(),
    upstreams: [
      { registry: 'docker.io', url: hub.url },
      { registry: 'registry.example.com', url: registry.url },
    ],
  });
  const host = new URL(mirror.url).host;
  podman = await startPodman({
    registriesConf: mirrorRegistriesConf([
      { prefix: 'docker.io', mirror: host },
      { prefix: 'registry.example.com', mirror: `${host}/registry.example.com` },
    ]),
  });
}, { timeout: 40_000 });

after(async () => {
  await podman?.stop();
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

interface LogLine {
  msg?: string;
  method?: string;
  path?: string;
  repo?: string;
  upstream?: string;
  digest?: string;
  cache?: string;
  status?: number;
}

function requestLines(): LogLine[] {
  return (mirror?.logs() ?? '')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => l.msg === 'request');
}

const need = <T>(v: T | undefined): T => {
  assert.ok(v !== undefined, 'harness not started');
  return v;
};

async function pull(ref: string, extra: string[] = []): Promise<PodmanResult> {
  const p = need(podman);
  const r = await p.podman(['pull', '--quiet', ...extra, ref], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `podman pull ${ref} failed:\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  return r;
}

interface Inspected {
  Id: string;
  Digest: string;
  RepoDigests: string[];
  RepoTags: string[];
  Architecture: string;
  RootFS: { Layers: string[] };
}

async function inspect(ref: string): Promise<Inspected> {
  const r = await need(podman).podman(['image', 'inspect', ref], { timeoutMs: 15_000 });
  assert.equal(r.code, 0, r.stderr);
  const list = JSON.parse(r.stdout) as Inspected[];
  assert.equal(list.length, 1);
  return list[0] as Inspected;
}

const diffIds = (img: PushedImage): string[] => (JSON.parse(img.configBytes.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;
const blobsOf = (img: PushedImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];

/** The image as the upstream holds it: config digest is podman's image ID, the manifest digest, the layers' diff IDs. */
async function assertSameImage(ref: string, img: PushedImage, manifestDigest = img.manifestDigest): Promise<Inspected> {
  const got = await inspect(ref);
  assert.equal(`sha256:${got.Id}`, img.configDigest, 'image ID is the upstream config digest');
  assert.equal(got.Digest, manifestDigest, 'the upstream manifest digest');
  assert.ok(got.RepoTags.includes(ref), JSON.stringify(got.RepoTags));
  assert.ok(got.RepoDigests.includes(`${ref.slice(0, ref.lastIndexOf(':'))}@${manifestDigest}`), JSON.stringify(got.RepoDigests));
  assert.deepEqual(got.RootFS.Layers, diffIds(img), 'every layer, uncompressed, as in the upstream config');
  return got;
}

/** Exactly one hub GET per blob; nothing else on the hub but manifests and tokens. */
function assertOneGetPerBlob(h: HubDouble, img: PushedImage): void {
  const s = h.stats();
  const gets = s.requests.filter((r) => r.kind === 'blobGet').map((r) => r.path.slice(r.path.lastIndexOf('/') + 1)).sort();
  assert.deepEqual(gets, [...blobsOf(img)].sort(), 'one upstream GET per blob');
  assert.equal(s.blobGet, blobsOf(img).length);
  assert.ok(s.manifestGet >= 1, 'the manifest came via the hub');
  // the rest is the mirror's own token dance: GET /v2/ (401) and /token
  const rest = s.requests.filter((r) => r.kind !== 'blobGet' && r.kind !== 'manifestGet' && r.kind !== 'token');
  assert.ok(rest.every((r) => r.method === 'GET' && r.path === '/v2/' && r.server === 'hub'), JSON.stringify(rest));
}

podmanTools.test('podman pulls a Docker Hub image through the registries.conf mirror', { timeout: 60_000 }, async () => {
  const h = need(hub);
  const p = need(podman);
  h.resetStats();
  const before = requestLines().length;
  await pull(ALPINE);
  await assertSameImage(ALPINE, seed.alpine);
  assertOneGetPerBlob(h, seed.alpine);

  const lines = requestLines().slice(before);
  assert.ok(lines.some((l) => l.path === '/v2/' && l.status === 200), 'podman pinged the mirror over plain HTTP');
  const api = lines.filter((l) => l.path !== '/v2/');
  assert.ok(api.length > 0, 'podman talked to the mirror');
  for (const l of api) {
    // no ?ns= and no host in the path: the mirror's default registry
    assert.equal(l.upstream, 'docker.io', JSON.stringify(l));
    assert.match(l.path ?? '', /^\/v2\/library\/alpine\/(manifests|blobs)\//);
    assert.ok((l.status ?? 0) < 400, JSON.stringify(l));
  }
  const fetched = api.filter((l) => l.method === 'GET' && l.status === 200 && blobsOf(seed.alpine).includes(l.digest ?? ''));
  assert.deepEqual(fetched.map((l) => l.digest).sort(), [...blobsOf(seed.alpine)].sort(), 'every blob came from the mirror');
  assert.ok(fetched.every((l) => l.cache === 'miss'), JSON.stringify(fetched));

  // The bytes really landed: each layer's text file, read through a podman image mount.
  const mounted = await p.podman(['image', 'mount', ALPINE], { timeoutMs: 15_000 });
  assert.equal(mounted.code, 0, mounted.stderr);
  try {
    for (let i = 0; i < seed.alpine.layers.length; i++) {
      const text = await readFile(p.nsPath(join(mounted.stdout.trim(), 'seed', `layer${i}.txt`)), 'utf8');
      assert.equal(text, `stevedore test layer layer${i}\nseed=library/alpine:3.19/linux/amd64\n`);
    }
  } finally {
    await p.podman(['image', 'unmount', ALPINE], { timeoutMs: 15_000 });
  }
});

podmanTools.test('after podman rmi, a re-pull is served from the mirror cache with no upstream blob GET', { timeout: 60_000 }, async () => {
  const h = need(hub);
  const p = need(podman);
  const rmi = await p.podman(['rmi', ALPINE], { timeoutMs: 15_000 });
  assert.equal(rmi.code, 0, rmi.stderr);
  const left = await p.podman(['images', '--quiet', '--noheading'], { timeoutMs: 15_000 });
  assert.equal(left.stdout.trim(), '', 'storage is empty again');
  h.resetStats();
  const before = requestLines().length;
  await pull(ALPINE);
  await assertSameImage(ALPINE, seed.alpine);
  const warm = h.stats();
  assert.equal(warm.blobGet, 0, 'no upstream blob GET on the re-pull');
  assert.equal(warm.manifestGet, 0, 'no upstream manifest GET on the re-pull (tag within tagTtl)');
  const hits = requestLines().slice(before).filter((l) => l.method === 'GET' && blobsOf(seed.alpine).includes(l.digest ?? ''));
  assert.equal(hits.length, blobsOf(seed.alpine).length, 'podman downloaded every blob again, from the mirror');
  assert.ok(hits.every((l) => l.cache === 'hit' && l.status === 200 && l.upstream === 'docker.io'), JSON.stringify(hits));
});

podmanTools.test('podman picks its platform out of a multi-arch index through the mirror', { timeout: 60_000 }, async () => {
  const h = need(hub);
  h.resetStats();
  const before = requestLines().length;
  const arm = need(seed.busybox.children['linux/arm64']);
  await pull(BUSYBOX, ['--platform', 'linux/arm64']);
  const got = await assertSameImage(BUSYBOX, arm, seed.busybox.indexDigest);
  assert.equal(got.Architecture, 'arm64');
  assertOneGetPerBlob(h, arm);
  const manifests = requestLines().slice(before).filter((l) => l.method === 'GET' && /\/manifests\//.test(l.path ?? ''));
  assert.ok(manifests.some((l) => l.path === '/v2/library/busybox/manifests/multi'), JSON.stringify(manifests));
  assert.ok(manifests.some((l) => l.path === `/v2/library/busybox/manifests/${arm.manifestDigest}`), 'the arm64 child by digest');
});

podmanTools.test('a second registry, named by a path prefix in the mirror location, is routed there and not via the hub', { timeout: 60_000 }, async () => {
  const h = need(hub);
  h.resetStats();
  const before = requestLines().length;
  await pull(APP);
  await assertSameImage(APP, seed.app);
  const s = h.stats();
  assert.deepEqual([s.manifestGet, s.manifestHead, s.blobGet, s.blobHead, s.tokens], [0, 0, 0, 0, 0], 'no hub traffic');
  const api = requestLines().slice(before).filter((l) => l.path !== '/v2/');
  assert.ok(api.length > 0, 'podman talked to the mirror');
  for (const l of api) {
    assert.equal(l.upstream, 'registry.example.com', JSON.stringify(l));
    assert.equal(l.repo, 'acme/app', JSON.stringify(l));
    assert.match(l.path ?? '', /^\/v2\/registry\.example\.com\/acme\/app\/(manifests|blobs)\//);
  }
  const fetched = api.filter((l) => l.method === 'GET' && l.status === 200 && blobsOf(seed.app).includes(l.digest ?? ''));
  assert.deepEqual(fetched.map((l) => l.digest).sort(), [...blobsOf(seed.app)].sort(), 'every blob came from the mirror');
});

podmanTools.test('a missing image fails fast: the mirror says 404 and the fallback to docker.io cannot leave the machine', { timeout: 60_000 }, async () => {
  const p = need(podman);
  const h = need(hub);
  h.resetStats();
  const before = requestLines().length;
  const started = Date.now();
  const r = await p.podman(['pull', 'docker.io/nosuch/thing:1'], { timeoutMs: 30_000 });
  assert.notEqual(r.code, 0);
  assert.ok(Date.now() - started < 15_000, `no network timeout (${Date.now() - started} ms)`);
  const asked = requestLines().slice(before).filter((l) => l.path === '/v2/nosuch/thing/manifests/1');
  assert.ok(asked.length >= 1 && asked.every((l) => l.status === 404), JSON.stringify(asked));
  // podman retries the whole pull; the mirror's negative cache keeps the retries off the upstream
  assert.equal(h.stats().manifestGet, 1, 'one upstream manifest GET however often podman asks');
  const mirrorHost = new URL(need(mirror).url).host;
  assert.ok(r.stderr.includes(`Mirrors also failed: [${mirrorHost}/nosuch/thing:1: reading manifest 1 in ${mirrorHost}/nosuch/thing: manifest unknown`), r.stderr);
  // registries.conf's location is the last resort; the closed loopback proxy refuses it at once
  assert.match(r.stderr, new RegExp(`registry-1\\.docker\\.io.*proxyconnect tcp: dial tcp 127\\.0\\.0\\.1:${p.proxyPort}`));
});

podmanTools.test('nothing is left running in the podman namespace between commands', { timeout: 10_000 }, () => {
  const p = need(podman);
  assert.deepEqual(p.namespacePids(), [p.holderPid]);
});
