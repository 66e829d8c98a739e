// Proves the test harness itself: real registry, seeding, the Hub double's
// token flow and fault modes, and skopeo pulling through the double.
// Run: node --import tsx --test test/support/self-test.test.ts
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { startHubDouble, type HubDouble } from './hub-double.js';
import { startRegistry, type RegistryHandle } from './registry.js';
import { seedStandard, type StandardSeed } from './seed-standard.js';
import { ALL_MANIFEST_ACCEPT, bigBlob, pushBlob, sha256Digest } from './seed.js';

const run = promisify(execFile);

interface Got {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<Got> {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers: flat, body };
}

async function tokenFor(hub: HubDouble, repo: string, basic?: string): Promise<string> {
  const res = await get(`${hub.url}/token?service=registry.test&scope=repository:${repo}:pull`, basic ? { authorization: basic } : {});
  assert.equal(res.status, 200, res.body.toString());
  const json = JSON.parse(res.body.toString()) as { token: string };
  return json.token;
}

async function errorCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'none';
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string } };
    return e.cause?.code ?? e.code ?? 'unknown';
  }
}

const SKOPEO_TIMEOUT = 60_000;

describe('stevedore test harness', () => {
  let reg: RegistryHandle;
  let seed: StandardSeed;
  let hub: HubDouble;
  let hubAuth: HubDouble;
  let work: string;
  const creds = { username: 'stevedore', password: 's3cret' };
  const basicOk = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'stevedore-selftest-'));
    reg = await startRegistry();
    seed = await seedStandard(reg.url);
    hub = await startHubDouble({ upstream: reg.url });
    hubAuth = await startHubDouble({ upstream: reg.url, credentials: creds });
  });

  after(async () => {
    await hub?.stop();
    await hubAuth?.stop();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('skopeo sees the seeded images on the real registry', async () => {
    const host = `127.0.0.1:${reg.port}`;
    const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${host}/library/alpine:3.19`], { timeout: SKOPEO_TIMEOUT });
    const info = JSON.parse(stdout) as { Digest: string; Layers: string[]; Architecture: string };
    assert.equal(info.Digest, seed.alpine.manifestDigest);
    assert.deepEqual(info.Layers, seed.alpine.layers.map((l) => l.digest));
    const raw = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/library/busybox:multi`], {
      timeout: SKOPEO_TIMEOUT, encoding: 'buffer',
    });
    assert.equal(sha256Digest(raw.stdout), seed.busybox.indexDigest);
  });

  test('layers are valid gzip tars whose diff_ids match the config', async () => {
    const config = JSON.parse(seed.alpine.configBytes.toString()) as { rootfs: { diff_ids: string[] } };
    for (const [i, layer] of seed.alpine.layers.entries()) {
      const res = await get(`${reg.url}/v2/library/alpine/blobs/${layer.digest}`);
      assert.equal(res.status, 200);
      assert.equal(sha256Digest(res.body), layer.digest);
      assert.equal(sha256Digest(gunzipSync(res.body)), config.rootfs.diff_ids[i]);
      const file = join(work, `layer${i}.tgz`);
      await writeFile(file, res.body);
      const { stdout } = await run('tar', ['-tzf', file], { timeout: 10_000 });
      assert.deepEqual(stdout.trim().split('\n'), ['seed/', `seed/layer${i}.txt`, `seed/layer${i}.bin`]);
    }
  });

  test('pushBlob streams a deterministic blob whose digest tests can recompute', async () => {
    const size = 8 * 1024 * 1024 + 123;
    const pushed = await pushBlob(reg.url, 'acme/raw', { size, seed: 'self-test' });
    assert.equal(pushed.digest, await bigBlob(size, 'self-test').digest());
    const res = await get(`${reg.url}/v2/acme/raw/blobs/${pushed.digest}`);
    assert.equal(res.body.length, size);
    assert.equal(sha256Digest(res.body), pushed.digest);
  });

  test('hub double: bearer token flow, scopes, rate-limit headers, counters', async () => {
    hub.resetStats();
    const root = await get(`${hub.url}/v2/`);
    assert.equal(root.status, 401);
    assert.equal(root.headers['www-authenticate'], `Bearer realm="${hub.url}/token",service="registry.test"`);

    const manifestUrl = `${hub.url}/v2/library/alpine/manifests/3.19`;
    const anon = await get(manifestUrl, { accept: ALL_MANIFEST_ACCEPT });
    assert.equal(anon.status, 401);
    assert.match(anon.headers['www-authenticate'] ?? '', /scope="repository:library\/alpine:pull"/);
    assert.equal((JSON.parse(anon.body.toString()) as { errors: { code: string }[] }).errors[0]?.code, 'UNAUTHORIZED');

    const token = await tokenFor(hub, 'library/alpine');
    const auth = { authorization: `Bearer ${token}`, accept: ALL_MANIFEST_ACCEPT };
    const ok = await get(manifestUrl, auth);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['docker-content-digest'], seed.alpine.manifestDigest);
    assert.equal(ok.headers['content-type'], seed.alpine.manifestMediaType);
    assert.deepEqual(ok.body, seed.alpine.manifestBytes);
    assert.equal(ok.headers['ratelimit-limit'], '100;w=21600');
    assert.equal(ok.headers['ratelimit-remaining'], '99;w=21600');
    assert.equal(ok.headers['docker-ratelimit-source'], '127.0.0.1');
    const head = await get(manifestUrl, auth, 'HEAD');
    assert.equal(head.headers['ratelimit-remaining'], '99;w=21600', 'HEAD must not decrement');
    assert.equal((await get(manifestUrl, auth)).headers['ratelimit-remaining'], '98;w=21600');

    const other = await get(`${hub.url}/v2/acme/app/manifests/v1`, auth);
    assert.equal(other.status, 401, 'token is scoped to its repository');
    assert.match(other.headers['www-authenticate'] ?? '', /error="insufficient_scope"/);

    hub.expireTokensNow();
    const expired = await get(manifestUrl, auth);
    assert.equal(expired.status, 401);
    assert.match(expired.headers['www-authenticate'] ?? '', /error="invalid_token"/);

    const s = hub.stats();
    assert.equal(s.manifestGet, 5);
    assert.equal(s.manifestHead, 1);
    assert.equal(s.tokens, 1);
    assert.equal(s.unauthorized, 4);
    assert.equal(s.bytesServed, 2 * seed.alpine.manifestBytes.length, 'only proxied bodies count');
    assert.deepEqual(s.requests.map((r) => r.status), [401, 401, 200, 200, 200, 200, 401, 401]);
  });

  test('token TTL: a short-lived token stops working on time', async () => {
    hub.tokenTtlSeconds = 0.2;
    try {
      const res = await get(`${hub.url}/token?service=registry.test&scope=repository:acme/app:pull`);
      assert.equal((JSON.parse(res.body.toString()) as { expires_in: number }).expires_in, 1);
      const token = (JSON.parse(res.body.toString()) as { token: string }).token;
      const url = `${hub.url}/v2/acme/app/tags/list`;
      assert.equal((await get(url, { authorization: `Bearer ${token}` })).status, 200);
      await new Promise((r) => setTimeout(r, 250));
      assert.equal((await get(url, { authorization: `Bearer ${token}` })).status, 401);
    } finally {
      hub.tokenTtlSeconds = 300;
    }
  });

  test('hub double with credentials: /token demands Basic auth; credentials only go to /token', async () => {
    hubAuth.resetStats();
    const tokenUrl = `${hubAuth.url}/token?service=registry.test&scope=repository:acme/app:pull`;
    assert.equal((await get(tokenUrl)).status, 401);
    const wrong = `Basic ${Buffer.from('stevedore:nope').toString('base64')}`;
    assert.equal((await get(tokenUrl, { authorization: wrong })).status, 401);
    const token = await tokenFor(hubAuth, 'acme/app', basicOk);
    const res = await get(`${hubAuth.url}/v2/acme/app/manifests/v1`, { authorization: `Bearer ${token}`, accept: ALL_MANIFEST_ACCEPT });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/vnd.oci.image.manifest.v1+json');
    const basicPaths = hubAuth.authSeen().filter((a) => a.authorization.startsWith('Basic ')).map((a) => a.path);
    assert.deepEqual(basicPaths, ['/token', '/token']);
  });

  test('hub double faults: failNext, corrupt, die mid-blob, throttle, redirect, down/up', async () => {
    const token = await tokenFor(hub, 'library/alpine');
    const auth = { authorization: `Bearer ${token}` };
    const layer = seed.alpine.layers[1];
    assert.ok(layer);
    const blobUrl = `${hub.url}/v2/library/alpine/blobs/${layer.digest}`;

    hub.failNext(2, 429, { 'retry-after': '1' }, 'blobGet');
    for (let i = 0; i < 2; i++) {
      const r = await get(blobUrl, auth);
      assert.equal(r.status, 429);
      assert.equal(r.headers['retry-after'], '1');
    }
    assert.equal(sha256Digest((await get(blobUrl, auth)).body), layer.digest);
    hub.failNext(1, 503);
    assert.equal((await get(`${hub.url}/v2/`, auth)).status, 503);

    hub.corruptBlob(layer.digest);
    const bad = await get(blobUrl, auth);
    assert.equal(bad.body.length, layer.size);
    assert.notEqual(sha256Digest(bad.body), layer.digest);
    const ranged = await get(blobUrl, { ...auth, range: 'bytes=10-19' });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers['content-range'], `bytes 10-19/${layer.size}`);
    hub.clearFaults();

    hub.dieMidBlob(layer.digest, 100_000);
    const before = hub.stats().bytesServed;
    assert.notEqual(await errorCode(get(blobUrl, auth)), 'none');
    assert.equal(hub.stats().bytesServed - before, 100_000);
    assert.equal(sha256Digest((await get(blobUrl, auth)).body), layer.digest, 'one-shot death');

    hub.throttle(1024 * 1024);
    const t0 = Date.now();
    assert.equal(sha256Digest((await get(blobUrl, auth)).body), layer.digest);
    assert.ok(Date.now() - t0 >= 200, `throttled read took ${Date.now() - t0} ms`);
    hub.throttle(null);

    hub.redirectBlobs = true;
    const redirect = await get(blobUrl, auth);
    assert.equal(redirect.status, 307);
    const location = new URL(redirect.headers['location'] ?? '');
    assert.equal(location.host, `localhost:${hub.cdnPort}`);
    const viaCdn = await get(location.toString());
    assert.equal(sha256Digest(viaCdn.body), layer.digest);
    assert.equal(hub.cdnAuthHeadersSeen, 0);
    await get(location.toString(), auth);
    assert.equal(hub.cdnAuthHeadersSeen, 1);
    location.searchParams.set('signature', 'forged');
    assert.equal((await get(location.toString())).status, 403);
    hub.redirectBlobs = false;

    await hub.down('reset');
    assert.match(await errorCode(get(`${hub.url}/v2/`)), /ECONNRESET|UND_ERR_SOCKET/);
    await hub.up();
    assert.equal((await get(`${hub.url}/v2/`, auth)).status, 200);
    await hub.down('refuse');
    assert.equal(await errorCode(get(`${hub.url}/v2/`)), 'ECONNREFUSED');
    await hub.up();
    assert.equal((await get(`${hub.url}/v2/`, auth)).status, 200);
  });

  test('skopeo copies through the double (token flow, CDN redirect, credentials)', async () => {
    hub.resetStats();
    hub.redirectBlobs = true;
    const dest = join(work, 'alpine');
    await run('skopeo', ['copy', '--src-tls-verify=false', `docker://127.0.0.1:${hub.port}/library/alpine:3.19`, `dir:${dest}`], {
      timeout: SKOPEO_TIMEOUT,
    });
    hub.redirectBlobs = false;
    assert.deepEqual(await readFile(join(dest, 'manifest.json')), seed.alpine.manifestBytes);
    const files = await readdir(dest);
    for (const l of seed.alpine.layers) assert.ok(files.includes(l.digest.slice('sha256:'.length)), `missing ${l.digest}`);
    const s = hub.stats();
    assert.ok(s.tokens >= 1);
    assert.equal(s.cdnGet, seed.alpine.layers.length + 1, 'layers + config fetched from the CDN');
    assert.equal(hub.cdnAuthHeadersSeen, 0, 'skopeo must not leak the bearer token to the CDN host');

    hubAuth.resetStats();
    const dest2 = join(work, 'busybox-arm64');
    await run('skopeo', [
      'copy', '--src-tls-verify=false', `--src-creds=${creds.username}:${creds.password}`, '--override-arch=arm64',
      `docker://127.0.0.1:${hubAuth.port}/library/busybox:multi`, `dir:${dest2}`,
    ], { timeout: SKOPEO_TIMEOUT });
    assert.deepEqual(await readFile(join(dest2, 'manifest.json')), seed.busybox.children['linux/arm64']?.manifestBytes);
    const basicPaths = new Set(hubAuth.authSeen().filter((a) => a.authorization.startsWith('Basic ')).map((a) => a.path));
    assert.deepEqual([...basicPaths], ['/token']);
  });

  test('startRegistry({proxy}) runs distribution as a pull-through cache of the double', async () => {
    hubAuth.resetStats();
    const px = await startRegistry({ proxy: { remoteurl: hubAuth.url, ...creds } });
    try {
      const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', `docker://127.0.0.1:${px.port}/acme/app:v1`], {
        timeout: SKOPEO_TIMEOUT,
      });
      assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, seed.app.manifestDigest, await px.readLog());
    } finally {
      await px.stop();
    }
    assert.ok(hubAuth.stats().tokens >= 1);
    const basicPaths = new Set(hubAuth.authSeen().filter((a) => a.authorization.startsWith('Basic ')).map((a) => a.path));
    assert.deepEqual([...basicPaths], ['/token']);
  });
});
