// End to end with containerd: `ctr images pull --hosts-dir` with a hosts.toml mirror entry per
// registry, the way containerd (and so Kubernetes nodes) use mirrors. containerd names the
// registry with ?ns=<registry>, which is what lets one Stevedore serve several registries.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { containerdUnavailableReason, startContainerd, type ContainerdHandle, type CtrResult } from '../support/containerd.js';
import { requirement } from '../support/requirements.js';

const containerdTools = requirement('containerd', await containerdUnavailableReason());
const ALPINE = 'docker.io/library/alpine:3.19';
const APP = 'registry.example.com/acme/app:v1';

let registry: RegistryHandle | undefined;
let hub: HubDouble | undefined;
let mirror: MirrorProcess | undefined;
let containerd: ContainerdHandle | undefined;
let seed: StandardSeed;
let hostsDir: string;

before(async () => {
  if (containerdTools.missing) return;
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
  containerd = await startContainerd();
  // Inside containerd's temp dir: visible to ctr in its namespace, removed by stop().
  hostsDir = join(containerd.baseDir, 'certs.d');
  const servers: Record<string, string> = { 'docker.io': 'https://registry-1.docker.io', 'registry.example.com': 'https://registry.example.com' };
  for (const [host, server] of Object.entries(servers)) {
    await mkdir(join(hostsDir, host), { recursive: true });
    await writeFile(
      join(hostsDir, host, 'hosts.toml'),
      `server = "${server}"\n\n[host."${mirror.url}"]\n  capabilities = ["pull", "resolve"]\n`,
    );
  }
}, { timeout: 40_000 });

after(async () => {
  await containerd?.stop();
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

interface LogLine {
  msg?: string;
  method?: string;
  path?: string;
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

async function pull(ref: string, namespace?: string): Promise<CtrResult> {
  const c = need(containerd);
  const r = await c.ctr(['images', 'pull', '--hosts-dir', hostsDir, '--platform', 'linux/amd64', ref], { timeoutMs: 20_000, namespace });
  assert.equal(r.code, 0, `ctr pull ${ref} failed:\n${r.stderr}\n${r.stdout.slice(-2000)}\n--- containerd ---\n${c.logs().slice(-3000)}`);
  return r;
}

/** The DIGEST column of `ctr images ls` for this ref. */
async function listedDigest(ref: string, namespace?: string): Promise<string | undefined> {
  const ls = await need(containerd).ctr(['images', 'ls'], { timeoutMs: 10_000, namespace });
  assert.equal(ls.code, 0, ls.stderr);
  return ls.stdout.split('\n').map((l) => l.trim().split(/\s+/)).find((cols) => cols[0] === ref)?.[2];
}

containerdTools.test('ctr pulls a Docker Hub image through the mirror (?ns=docker.io -> the hub upstream)', { timeout: 30_000 }, async () => {
  const h = need(hub);
  h.resetStats();
  const before = requestLines().length;
  await pull(ALPINE);
  assert.equal(await listedDigest(ALPINE), seed.alpine.manifestDigest, 'the upstream manifest digest');
  const cold = h.stats();
  const blobs = [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)];
  assert.equal(cold.blobGet, blobs.length, 'config and every layer fetched via the hub once');
  assert.ok(cold.manifestGet + cold.manifestHead >= 1, 'the manifest came via the hub');
  const lines = requestLines().slice(before);
  assert.ok(lines.length > 0, 'ctr talked to the mirror');
  for (const l of lines) {
    assert.equal(l.upstream, 'docker.io', JSON.stringify(l));
    assert.match(l.path ?? '', /^\/v2\/library\/alpine\/(manifests|blobs)\//);
    assert.ok((l.status ?? 0) < 400, JSON.stringify(l));
  }
  const fetched = lines.filter((l) => l.method === 'GET' && blobs.includes(l.digest ?? ''));
  assert.deepEqual(fetched.map((l) => l.digest).sort(), [...blobs].sort(), 'every blob came from the mirror');
});

containerdTools.test('ctr pulls registry.example.com through the same mirror, routed by ?ns= and not via the hub', { timeout: 30_000 }, async () => {
  const h = need(hub);
  h.resetStats();
  const before = requestLines().length;
  await pull(APP);
  assert.equal(await listedDigest(APP), seed.app.manifestDigest);
  // Without ?ns= the mirror would take acme/app for a Docker Hub repository (the default) and ask the hub.
  const s = h.stats();
  assert.deepEqual([s.manifestGet, s.manifestHead, s.blobGet, s.blobHead], [0, 0, 0, 0], 'no hub traffic');
  const lines = requestLines().slice(before);
  assert.ok(lines.length > 0, 'ctr talked to the mirror');
  for (const l of lines) {
    assert.equal(l.upstream, 'registry.example.com', JSON.stringify(l));
    assert.match(l.path ?? '', /^\/v2\/acme\/app\//);
  }
});

containerdTools.test('a re-pull into a fresh containerd namespace is served from the mirror cache', { timeout: 30_000 }, async () => {
  const h = need(hub);
  const c = need(containerd);
  const empty = await c.ctr(['content', 'ls', '-q'], { namespace: 'test2', timeoutMs: 10_000 });
  assert.equal(empty.stdout.trim(), '', 'test2 starts without content (isolated content sharing)');
  h.resetStats();
  const before = requestLines().length;
  await pull(ALPINE, 'test2');
  assert.equal(await listedDigest(ALPINE, 'test2'), seed.alpine.manifestDigest);
  const warm = h.stats();
  assert.equal(warm.blobGet, 0, 'no upstream blob GET on the re-pull');
  assert.equal(warm.manifestGet, 0, 'no upstream manifest GET on the re-pull');
  const blobs = [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)];
  const hits = requestLines().slice(before).filter((l) => l.method === 'GET' && blobs.includes(l.digest ?? ''));
  assert.equal(hits.length, blobs.length, 'containerd downloaded every blob again, from the mirror');
  assert.ok(hits.every((l) => l.cache === 'hit' && l.status === 200 && l.upstream === 'docker.io'), JSON.stringify(hits));
});

containerdTools.test('a missing image fails fast: the mirror says 404 and the fallback to the real server cannot leave the machine', { timeout: 30_000 }, async () => {
  const c = need(containerd);
  const before = requestLines().length;
  const started = Date.now();
  const r = await c.ctr(['images', 'pull', '--hosts-dir', hostsDir, 'docker.io/nosuch/thing:1'], { timeoutMs: 20_000 });
  assert.notEqual(r.code, 0);
  assert.ok(Date.now() - started < 10_000, 'no network timeout');
  assert.ok(requestLines().slice(before).some((l) => l.status === 404 && l.path === '/v2/nosuch/thing/manifests/1'), 'asked the mirror first');
  // hosts.toml's `server` is the last resort; the closed loopback proxy refuses it at once
  assert.match(r.stderr, new RegExp(`registry-1\\.docker\\.io.*proxyconnect tcp: dial tcp 127\\.0\\.0\\.1:${c.proxyPort}`));
});
