// Graceful shutdown of a real Stevedore process: on SIGTERM it stops
// accepting, lets pulls in flight finish within the grace period, discards
// fills that cannot finish, closes the index and exits 0. The cache verifies.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { request } from 'undici';
import { waitFor } from '../support/wait.js';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, type PushedBlob } from '../support/seed.js';
import { runCli, startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { streamDigest } from '../support/http.js';

const MiB = 1024 * 1024;
let registry: RegistryHandle;
let hub: HubDouble;
let finishes: PushedBlob;
let tooSlow: PushedBlob;
const work = mkdtempSync(join(tmpdir(), 'stevedore-shutdown-'));

before(async () => {
  registry = await startRegistry();
  finishes = await pushBlob(registry.url, 'acme/big', { size: 8 * MiB, seed: 'shutdown-finishes' });
  tooSlow = await pushBlob(registry.url, 'acme/big', { size: 8 * MiB, seed: 'shutdown-too-slow' });
  hub = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function startWith(dir: string, grace: string): Promise<MirrorProcess> {
  return startMirrorProcess({ port: await freePort(), dir, upstreams: [{ registry: 'docker.io', url: hub.url }], extra: { limits: { shutdownGrace: grace } } });
}

/** Resolves once the first body bytes of a pull arrived, with the whole pull's outcome to come. */
async function pullStarted(url: string): Promise<{ outcome: Promise<{ digest: string; bytes: number } | Error> }> {
  const res = await request(url);
  assert.equal(res.statusCode, 200);
  const { createHash } = await import('node:crypto');
  const hash = createHash('sha256');
  let bytes = 0;
  const iterator = res.body[Symbol.asyncIterator]();
  const first = await iterator.next();
  hash.update(first.value as Buffer);
  bytes += (first.value as Buffer).length;
  const outcome = (async () => {
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        hash.update(next.value as Buffer);
        bytes += (next.value as Buffer).length;
      }
      return { digest: `sha256:${hash.digest('hex')}`, bytes };
    } catch (err) {
      return err as Error;
    }
  })();
  return { outcome };
}

async function verifyClean(dir: string): Promise<void> {
  const configFile = join(work, `verify-${Date.now()}.yml`);
  writeFileSync(configFile, `cache:\n  dir: ${JSON.stringify(dir)}\nupstreams:\n  - registry: docker.io\n    endpoints: [{ url: "${hub.url}" }]\n`);
  const verified = await runCli(['verify', '--config', configFile]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /0 damaged/);
}

const tempFiles = (dir: string): string[] => (existsSync(join(dir, 'tmp')) ? readdirSync(join(dir, 'tmp')) : []);

test('SIGTERM: new connections are refused, a pull in flight finishes with the right bytes, and its blob is kept', async () => {
  const dir = join(work, 'finishes');
  const mirror = await startWith(dir, '20s');
  try {
    hub.throttle(4 * MiB); // about 2 s for the blob
    const pull = await pullStarted(`${mirror.url}/v2/acme/big/blobs/${finishes.digest}`);
    process.kill(mirror.pid, 'SIGTERM');
    // The line is written in the turn after the listeners were closed.
    await waitFor('the shutdown to begin', () => mirror.logs().includes('"msg":"shutting down"'));
    // A new TCP connection, not a pooled keep-alive one that the shutdown is closing as idle.
    const refused = await new Promise<string>((resolve) => {
      const socket = connect({ port: Number(new URL(mirror.url).port), host: '127.0.0.1' });
      socket.once('connect', () => { socket.destroy(); resolve('connected'); });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    assert.equal(refused, 'ECONNREFUSED', 'the listener is closed');
    const done = await pull.outcome;
    assert.ok(!(done instanceof Error), `the pull in flight failed: ${String(done)}`);
    assert.equal(done.digest, finishes.digest);
    assert.equal(await mirror.exited, 0);
    assert.match(mirror.logs(), /shutting down/);
  } finally {
    hub.throttle(null);
    await mirror.stop();
  }
  assert.deepEqual(tempFiles(dir), []);
  await verifyClean(dir);
  // The blob was committed before exit: a restart serves it with no upstream request.
  const again = await startWith(dir, '20s');
  try {
    hub.resetStats();
    assert.equal((await streamDigest(`${again.url}/v2/acme/big/blobs/${finishes.digest}`)).digest, finishes.digest);
    assert.equal(hub.stats().blobGet, 0);
  } finally {
    await again.stop();
  }
});

test('SIGTERM with a fill slower than the grace period: the client is cut off, the partial blob is discarded, and it is fetched whole after a restart', async () => {
  const dir = join(work, 'too-slow');
  const mirror = await startWith(dir, '1s');
  let exitedAfter = 0;
  try {
    hub.throttle(512 * 1024); // 16 s for the blob, far beyond the grace
    const pull = await pullStarted(`${mirror.url}/v2/acme/big/blobs/${tooSlow.digest}`);
    const signalled = Date.now();
    process.kill(mirror.pid, 'SIGTERM');
    const done = await pull.outcome;
    assert.ok(done instanceof Error || done.digest !== tooSlow.digest, 'the client did not get a complete, verified blob');
    if (!(done instanceof Error)) assert.ok(done.bytes < tooSlow.size, 'a cut-off body is short, never padded');
    assert.equal(await mirror.exited, 0);
    exitedAfter = Date.now() - signalled;
  } finally {
    hub.throttle(null);
    await mirror.stop();
  }
  assert.ok(exitedAfter < 10_000, `exited ${exitedAfter} ms after SIGTERM`);
  assert.deepEqual(tempFiles(dir), [], 'no partial file is left');
  await verifyClean(dir);
  const again = await startWith(dir, '20s');
  try {
    hub.resetStats();
    assert.equal((await streamDigest(`${again.url}/v2/acme/big/blobs/${tooSlow.digest}`)).digest, tooSlow.digest);
    assert.equal(hub.stats().blobGet, 1, 'the discarded blob is fetched again, whole');
  } finally {
    await again.stop();
  }
});
