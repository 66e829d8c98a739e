// Blob fills against a real upstream (docker-registry) behind the Docker Hub
// double: single flight, streaming followers, verification, Range, auth.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, deterministicBytes } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, json, streamDigest } from '../support/http.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
const repo = 'acme/blobs';
const blobs: Record<string, { digest: string; size: number; seed: string }> = {};

async function seedBlob(name: string, size: number): Promise<void> {
  const seed = `blob-${name}`;
  const pushed = await pushBlob(registry.url, repo, { size, seed });
  blobs[name] = { ...pushed, seed };
}

const blobUrl = (name: string): string => `${mirror.url}/v2/${repo}/blobs/${blobs[name]!.digest}`;
const blobPath = (digest: string): string => join(mirror.dir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
const tmpFiles = (): string[] => readdirSync(join(mirror.dir, 'tmp'));
const fillOf = (digest: string) => mirror.stevedore.mirror.fills.snapshot().find((f) => f.digest === digest);
/** How each request for `digest` was served, in log order. */
const outcomesOf = (digest: string): unknown[] => mirror.logs().filter((l) => l.msg === 'request' && l.digest === digest && l.method === 'GET').map((l) => l.cache);

before(async () => {
  registry = await startRegistry();
  await seedBlob('big', 64 * MiB);
  for (const name of ['follower', 'corrupt', 'range-cold', 'disconnect', 'redirect', 'token', 'small']) {
    await seedBlob(name, name === 'small' ? 300_000 : 16 * MiB);
  }
  hub = await startHubDouble({ upstream: registry.url });
  // The hub double's CDN is on `localhost`, a private address the guard only lets redirects reach when listed.
  mirror = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url, settings: { redirectAllow: ['localhost'] } }] });
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

test('16 concurrent cold GETs of a 64 MiB blob make exactly one upstream GET, and all 16 verify', async () => {
  hub.resetStats();
  const { digest, size } = blobs.big!;
  const results = await Promise.all(Array.from({ length: 16 }, () => streamDigest(blobUrl('big'))));
  for (const r of results) {
    assert.equal(r.status, 200);
    assert.equal(r.bytes, size);
    assert.equal(r.digest, digest);
  }
  assert.equal(hub.stats().blobGet, 1, 'one upstream GET for 16 clients');
  const outcomes = mirror.logs().filter((l) => l.msg === 'request' && l.digest === digest).map((l) => l.cache);
  assert.equal(outcomes.filter((c) => c === 'miss').length, 1);
  assert.equal(outcomes.filter((c) => c === 'coalesced').length, 15);
  // Now cached: a HEAD and a GET go nowhere upstream.
  hub.resetStats();
  const head = await get(blobUrl('big'), {}, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], String(size));
  assert.equal(head.headers['docker-content-digest'], digest);
  assert.equal((await streamDigest(blobUrl('big'))).digest, digest);
  assert.equal(hub.stats().blobGet + hub.stats().blobHead, 0);
});

test('a follower that joins mid-fill gets its first bytes before the fill ends', async () => {
  const { digest } = blobs.follower!;
  hub.resetStats();
  hub.throttle(8 * MiB); // 16 MiB takes about 2 s
  try {
    const leader = streamDigest(blobUrl('follower'));
    await waitFor('the fill to be under way', () => fillOf(digest)?.state === 'filling' && fillOf(digest)!.bytes > 0);
    // The follower notes, at its first byte, whether the fill was still running.
    const res = await request(blobUrl('follower'));
    const hash = createHash('sha256');
    let stateAtFirstByte: string | undefined;
    for await (const chunk of res.body) {
      stateAtFirstByte ??= fillOf(digest)?.state ?? 'gone';
      hash.update(chunk as Buffer);
    }
    assert.equal(stateAtFirstByte, 'filling', 'the first byte came while the fill was still running');
    assert.equal(`sha256:${hash.digest('hex')}`, digest);
    assert.equal((await leader).digest, digest);
    assert.equal(hub.stats().blobGet, 1);
    await waitFor('both requests logged', () => outcomesOf(digest).length === 2);
    assert.deepEqual(outcomesOf(digest).sort(), ['coalesced', 'miss'], 'the follower joined the fill');
  } finally {
    hub.throttle(null);
  }
});

test('a corrupt upstream body aborts the client and leaves nothing in the index or on disk', async () => {
  const { digest, size } = blobs.corrupt!;
  hub.corruptBlob(digest);
  try {
    const res = await request(blobUrl('corrupt'));
    assert.equal(res.statusCode, 200);
    let received = 0;
    await assert.rejects(
      (async () => {
        for await (const chunk of res.body) received += (chunk as Buffer).length;
      })(),
      'the transfer must be aborted, not completed',
    );
    assert.ok(received < size, `client got ${received} of ${size} bytes, never a complete body`);
    // The failure is logged once the fill has cleaned up after itself.
    await waitFor('the failed fill', () => mirror.logs().some((l) => l.msg === 'blob fill failed; nothing cached' && l.digest === digest));
    assert.equal(existsSync(blobPath(digest)), false, 'no blob file');
    assert.deepEqual(tmpFiles(), [], 'no temp file left');
    assert.equal(mirror.stevedore.mirror.cache.lookupBlob({ algorithm: 'sha256', hex: digest.slice(7), value: digest }), undefined);
    assert.ok(mirror.logs().some((l) => l.msg === 'blob fill failed; nothing cached' && l.digest === digest));
  } finally {
    hub.clearFaults();
  }
  // Once the upstream is healthy again, a retry gets the right bytes.
  const retry = await streamDigest(blobUrl('corrupt'));
  assert.equal(retry.digest, digest);
  await waitFor('the blob file', () => existsSync(blobPath(digest)));
});

test('Range on a cached blob: closed, open, suffix, trimmed and unsatisfiable', async () => {
  const { digest, size, seed } = blobs.small!;
  const bytes = deterministicBytes(size, seed);
  assert.equal((await streamDigest(blobUrl('small'))).digest, digest);
  hub.resetStats();
  const cases: [string, number, number][] = [
    ['bytes=0-99', 0, 99],
    ['bytes=1000-', 1000, size - 1],
    ['bytes=-500', size - 500, size - 1],
    [`bytes=${size - 10}-${size + 1000}`, size - 10, size - 1],
  ];
  for (const [range, start, end] of cases) {
    const res = await get(blobUrl('small'), { range });
    assert.equal(res.status, 206, range);
    assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${size}`, range);
    assert.equal(res.headers['content-length'], String(end - start + 1), range);
    assert.ok(res.body.equals(bytes.subarray(start, end + 1)), `bytes of ${range}`);
  }
  const bad = await get(blobUrl('small'), { range: `bytes=${size}-` });
  assert.equal(bad.status, 416);
  assert.equal(bad.headers['content-range'], `bytes */${size}`);
  assert.equal(json(bad).errors?.[0]?.code, 'BLOB_UNKNOWN');
  assert.equal(hub.stats().blobGet, 0, 'ranges of a cached blob never go upstream');
});

test('Range on a cold blob is answered from the fill, and the whole blob gets cached', async () => {
  const { digest, size, seed } = blobs['range-cold']!;
  const bytes = deterministicBytes(size, seed);
  hub.resetStats();
  const start = 5 * MiB + 3;
  const res = await get(blobUrl('range-cold'), { range: `bytes=${start}-${start + 999}` });
  assert.equal(res.status, 206);
  assert.equal(res.headers['content-range'], `bytes ${start}-${start + 999}/${size}`);
  assert.ok(res.body.equals(bytes.subarray(start, start + 1000)));
  const tail = await get(blobUrl('range-cold'), { range: 'bytes=-10' });
  assert.ok(tail.body.equals(bytes.subarray(size - 10)));
  const whole = await streamDigest(blobUrl('range-cold'));
  assert.equal(whole.digest, digest);
  assert.equal(hub.stats().blobGet, 1);
});

test('the fill survives the first client disconnecting, and the follower completes', async () => {
  const { digest } = blobs.disconnect!;
  hub.resetStats();
  hub.throttle(16 * MiB);
  try {
    const controller = new AbortController();
    const first = await request(blobUrl('disconnect'), { signal: controller.signal });
    const follower = streamDigest(blobUrl('disconnect'));
    let got = 0;
    await assert.rejects(async () => {
      for await (const chunk of first.body) {
        got += (chunk as Buffer).length;
        if (got > MiB) controller.abort();
      }
    });
    const result = await follower;
    assert.equal(result.digest, digest);
    assert.equal(hub.stats().blobGet, 1);
  } finally {
    hub.throttle(null);
  }
  await waitFor('the blob to be cached although its first client left', () => existsSync(blobPath(digest)));
});

test('blob redirects to a CDN are followed without sending our Authorization there', async () => {
  const { digest } = blobs.redirect!;
  hub.redirectBlobs = true;
  try {
    const result = await streamDigest(blobUrl('redirect'));
    assert.equal(result.digest, digest);
    assert.ok(hub.stats().cdnGet >= 1, 'the blob came from the CDN');
    assert.equal(hub.cdnAuthHeadersSeen, 0, 'no Authorization header reached the CDN');
  } finally {
    hub.redirectBlobs = false;
  }
});

test('a token that expires mid-pull is refreshed once, and the pull continues', async () => {
  const { digest } = blobs.token!;
  // Warm the token for this repository's scope with a cached-blob HEAD that goes upstream.
  await get(`${mirror.url}/v2/${repo}/blobs/${blobs.small!.digest}`, {}, 'HEAD');
  const before = hub.stats();
  hub.expireTokensNow();
  const result = await streamDigest(blobUrl('token'));
  assert.equal(result.status, 200);
  assert.equal(result.digest, digest);
  const afterStats = hub.stats();
  assert.equal(afterStats.tokens - before.tokens, 1, 'exactly one new token');
  assert.equal(afterStats.unauthorized - before.unauthorized, 1, 'one 401 for the expired token');
  assert.equal(afterStats.blobGet - before.blobGet, 2, 'the rejected GET and its retry');
});

test('tokens are cached: many cold blobs of one repository cost one token', async () => {
  const { tokens } = hub.stats();
  const names = ['n1', 'n2', 'n3', 'n4', 'n5'];
  const pushed = await Promise.all(names.map((n) => pushBlob(registry.url, 'acme/tokens', { size: 1000, seed: n })));
  await Promise.all(pushed.map((p) => streamDigest(`${mirror.url}/v2/acme/tokens/blobs/${p.digest}`)));
  assert.equal(hub.stats().tokens - tokens, 1);
});

test('a follower is not failed by a fill that started through a repository without the blob', async () => {
  const blob = await pushBlob(registry.url, 'acme/has', { size: 200_000, seed: 'only-in-has' });
  const stalled = hub.hold((r) => r.kind === 'blobGet' && r.path === `/v2/acme/missing/blobs/${blob.digest}`);
  hub.resetStats();
  try {
    const wrong = get(`${mirror.url}/v2/acme/missing/blobs/${blob.digest}`);
    await waitFor('the wrong fill to reach the upstream', () => stalled.waiting === 1);
    const right = streamDigest(`${mirror.url}/v2/acme/has/blobs/${blob.digest}`);
    await waitFor('the follower to join the wrong fill', () => fillOf(blob.digest)?.joined === 2);
    stalled.release();
    const [w, r] = await Promise.all([wrong, right]);
    assert.equal(w.status, 404);
    assert.equal(json(w).errors?.[0]?.code, 'BLOB_UNKNOWN');
    assert.equal(r.status, 200);
    assert.equal(r.digest, blob.digest);
  } finally {
    stalled.release();
  }
  const requests = hub.stats().requests.filter((q) => q.path.endsWith(blob.digest)).map((q) => `${q.method} ${q.path.split('/blobs/')[0]} ${q.status}`);
  // Joining another repository's fill needed acme/has's own upstream to confirm the blob first.
  assert.deepEqual(requests.sort(), ['GET /v2/acme/has 200', 'GET /v2/acme/missing 404', 'HEAD /v2/acme/has 200']);
});
