// Three Stevedore replicas on one Ceph RGW bucket and one redis-server,
// behind nginx as a round-robin balancer, with skopeo and dockerd pulling:
// each blob is fetched upstream once for the whole cluster, tags are checked
// once per tagTtl, housekeeping runs on one replica, and losing a replica or
// Redis loses no pull.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { ALL_MANIFEST_ACCEPT, pushBlob, pushImage, type PushedBlob, type PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get } from '../support/http.js';
import { rgwUnavailableReason, startRgw, type Rgw } from '../support/rgw.js';
import { redisUnavailableReason, startRedis, type RedisServer } from '../support/redis.js';
import { balancerUnavailableReason, startBalancer, type Balancer } from '../support/nginx-balancer.js';
import { dockerdUnavailableReason, startDockerd } from '../support/dockerd.js';
import { requirement } from '../support/requirements.js';
import { waitFor, waitForAsync } from '../support/wait.js';

const MiB = 1024 * 1024;
const BUCKET = 'stevedore-cluster';
const SECRET = 'cluster-secret-for-tests-0123456789';
const LEASE_TTL = '3s';
const missing = (await rgwUnavailableReason()) ?? (await redisUnavailableReason()) ?? (await balancerUnavailableReason());
const cluster = requirement('a cluster (Ceph RGW, redis-server, nginx)', missing);
const withDockerd = requirement('a cluster with dockerd', missing ?? (await dockerdUnavailableReason()));

const work = mkdtempSync(join(tmpdir(), 'stevedore-cluster-'));
let registry: RegistryHandle;
let hub: HubDouble;
let seed: StandardSeed;
let rgw: Rgw;
let redis: RedisServer;
let balancer: Balancer;
let big: PushedBlob;
let bigToo: PushedBlob;
let tagged: PushedImage;
let warmed: PushedImage;
let viaDockerd: PushedImage;
const replicas: MirrorProcess[] = [];
/** When the scheduled warm-up runs: a one-off date, after the replicas are up. */
let warmupAt: Date;

const host = (m: { url: string }): string => m.url.replace('http://', '');
const keyOf = (digest: string): string => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;

async function startReplica(port: number): Promise<MirrorProcess> {
  const m = await startMirrorProcess({
    port,
    upstreams: [{ registry: 'docker.io', url: hub.url, timeouts: { body: '30s' } }],
    warmup: [{ name: 'warm-once', schedule: warmupAt.toISOString().replace(/\.\d+Z$/, ''), images: ['library/warmed:1'] }],
    extra: {
      storage: { driver: 's3', s3: { bucket: BUCKET, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, partSize: '8MiB' } },
      cluster: { redis: redis.url, advertise: `http://127.0.0.1:${port}`, secret: SECRET, leaseTtl: LEASE_TTL },
    },
  });
  return m;
}

before(async () => {
  if (cluster.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  big = await pushBlob(registry.url, 'acme/big', { size: 256 * MiB, seed: 'cluster-big' });
  bigToo = await pushBlob(registry.url, 'acme/big', { size: 256 * MiB, seed: 'cluster-big-too' });
  tagged = await pushImage(registry.url, 'library/tagged', '1', { format: 'oci', layers: [64 * 1024] });
  warmed = await pushImage(registry.url, 'library/warmed', '1', { format: 'oci', layers: [32 * 1024] });
  viaDockerd = await pushImage(registry.url, 'library/dockerd-image', '1', { format: 'docker', layers: [512 * 1024, 128 * 1024], os: 'linux', arch: 'amd64' });
  hub = await startHubDouble({ upstream: registry.url });
  rgw = await startRgw();
  await rgw.createBucket(BUCKET);
  redis = await startRedis();
  const ports = [await freePort(), await freePort(), await freePort()];
  // Croner reads a date without a zone as local time: give it one in local time.
  warmupAt = new Date(Date.now() + 20_000);
  warmupAt = new Date(warmupAt.getTime() - warmupAt.getTimezoneOffset() * 60_000);
  for (const port of ports) replicas.push(await startReplica(port));
  balancer = await startBalancer(replicas.map((r) => r.url));
});

after(async () => {
  await balancer?.stop();
  for (const m of replicas) await m.stop();
  await redis?.stop();
  await hub?.stop();
  await registry?.stop();
  await rgw?.stop();
  rmSync(work, { recursive: true, force: true });
});

interface ClusterView {
  mode: string;
  self: { id: string; url: string };
  redisConnected: boolean;
  replicas: { id: string; url: string; leader: boolean; fillsInProgress: number; lastHeartbeatMsAgo: number }[];
}

async function clusterView(m: MirrorProcess): Promise<ClusterView> {
  const res = await get(`${m.url}/api/cluster`);
  assert.equal(res.status, 200, res.body.toString());
  return JSON.parse(res.body.toString()) as ClusterView;
}

async function metric(m: MirrorProcess, name: string): Promise<number> {
  const text = (await get(`${m.url}/metrics`)).body.toString();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name) && !line.startsWith('#')) sum += Number(line.split(' ').pop());
  return sum;
}

/** Upstream GETs of one blob's bytes (hub and CDN). */
const blobGets = (digest: string): number => hub.stats().requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`) && r.server === 'hub').length;

interface Pulled {
  status: number;
  digest: string;
  bytes: number;
}

/** GETs a blob and hashes it; `onFirstByte` is told when its first byte arrives. */
async function pullBlob(url: string, onFirstByte?: () => void): Promise<Pulled> {
  const res = await request(url, { headersTimeout: 120_000, bodyTimeout: 60_000 });
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body) {
    if (bytes === 0) onFirstByte?.();
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes };
}

/** A pull that retries through the balancer when its replica goes away, at most three times. */
async function pullWithRetry(first: string, path: string, expected: PushedBlob, onFirstByte?: () => void): Promise<{ attempts: number }> {
  let base = first;
  for (let attempt = 1; attempt <= 4; attempt++) {
    const got = await pullBlob(`${base}${path}`, onFirstByte).catch((err: Error) => ({ status: 0, digest: err.message, bytes: 0 }));
    if (got.status === 200 && got.digest === expected.digest && got.bytes === expected.size) return { attempts: attempt };
    base = balancer.url;
  }
  throw new Error(`${path} did not pull whole after 4 attempts`);
}

cluster.test('a scheduled warm-up runs once, on the replica leading the housekeeping', { timeout: 90_000 }, async () => {
  const views = await Promise.all(replicas.map(clusterView));
  for (const view of views) {
    assert.equal(view.mode, 'redis');
    assert.equal(view.redisConnected, true);
    assert.deepEqual(view.replicas.map((r) => r.url).sort(), replicas.map((r) => r.url).sort(), 'every replica sees all three');
  }
  const leaders = views.flatMap((v) => v.replicas.filter((r) => r.leader).map((r) => r.id));
  assert.equal(new Set(leaders).size, 1, `one leader, as every replica sees it: ${leaders.join(', ')}`);
  const runsOf = async (m: MirrorProcess): Promise<{ job: string; status: string }[]> => {
    const body = JSON.parse((await get(`${m.url}/api/jobs`)).body.toString()) as { runs: { job: string; status: string; trigger: string }[] };
    return body.runs.filter((j) => j.job === 'warm-once');
  };
  await waitForAsync('the warm-up to run', async () => (await Promise.all(replicas.map(runsOf))).flat().some((j) => j.status === 'succeeded'), 60_000);
  const runs = await Promise.all(replicas.map(runsOf));
  assert.equal(runs.flat().length, 1, `runs per replica: ${runs.map((r) => r.length).join(', ')}`);
  const leaderIndex = views[0]!.replicas.find((r) => r.leader)!.url;
  assert.equal(runs[replicas.findIndex((m) => m.url === leaderIndex)]!.length, 1, 'the leader ran it');
  assert.equal(hub.stats().requests.filter((r) => r.method === 'GET' && r.path === `/v2/library/warmed/manifests/1`).length, 1);
  assert.equal(blobGets(warmed.layers[0]!.digest), 1);
});

cluster.test('a pull through replica A, then through B and C: the second and third ask the upstream nothing', { timeout: 120_000 }, async () => {
  const [a, b, c] = replicas as [MirrorProcess, MirrorProcess, MirrorProcess];
  const first = await skopeo(['copy', '--src-tls-verify=false', `docker://${host(a)}/library/alpine:3.19`, `dir:${join(work, 'alpine-a')}`]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(readDirCopy(join(work, 'alpine-a')).manifestDigest, seed.alpine.manifestDigest);
  hub.resetStats();
  for (const [name, m] of [['b', b], ['c', c]] as const) {
    const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${host(m)}/library/alpine:3.19`, `dir:${join(work, `alpine-${name}`)}`]);
    assert.equal(pulled.code, 0, pulled.stderr);
    const copy = readDirCopy(join(work, `alpine-${name}`));
    assert.equal(copy.manifestDigest, seed.alpine.manifestDigest);
    assert.deepEqual(copy.blobs.sort(), [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)].sort());
  }
  assert.equal(hub.stats().requests.length, 0, `upstream requests: ${JSON.stringify(hub.stats().requests.map((r) => `${r.method} ${r.path}`))}`);
});

withDockerd.test('dockerd through the balancer: a cold pull spread over the replicas, then after rmi a pull with no upstream request', { timeout: 180_000 }, async () => {
  const dockerd = await startDockerd({ mirrorUrl: balancer.url });
  try {
    const pull = await dockerd.docker(['pull', 'dockerd-image:1']);
    assert.equal(pull.code, 0, `${pull.stderr}\n${dockerd.logs().slice(-2000)}`);
    assert.equal((await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'dockerd-image:1'])).stdout.trim(), viaDockerd.configDigest);
    assert.equal((await dockerd.docker(['rmi', 'dockerd-image:1'])).code, 0);
    hub.resetStats();
    // Round robin sends each request of this pull to another replica than last time.
    const again = await dockerd.docker(['pull', 'dockerd-image:1']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal((await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'dockerd-image:1'])).stdout.trim(), viaDockerd.configDigest);
    assert.equal(hub.stats().requests.length, 0, `upstream requests: ${JSON.stringify(hub.stats().requests.map((r) => `${r.method} ${r.path}`))}`);
  } finally {
    await dockerd.stop();
  }
});

cluster.test('a tag pulled through all three replicas within tagTtl costs one upstream HEAD, not three', { timeout: 60_000 }, async () => {
  hub.resetStats();
  const accept = { accept: ALL_MANIFEST_ACCEPT };
  for (const m of replicas) {
    const res = await get(`${m.url}/v2/library/tagged/manifests/1`, accept);
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.headers['docker-content-digest'], tagged.manifestDigest);
  }
  const manifestRequests = hub.stats().requests.filter((r) => r.path === '/v2/library/tagged/manifests/1');
  assert.equal(manifestRequests.filter((r) => r.method === 'HEAD').length, 1, JSON.stringify(manifestRequests));
  assert.equal(manifestRequests.filter((r) => r.method === 'GET').length, 1, JSON.stringify(manifestRequests));
  // A tag the upstream lacks is asked for once too: its 404 is shared.
  for (const m of replicas) assert.equal((await get(`${m.url}/v2/library/tagged/manifests/nope`, accept)).status, 404);
  assert.equal(hub.stats().requests.filter((r) => r.path === '/v2/library/tagged/manifests/nope' && r.method === 'GET').length, 1);
});

cluster.test('24 concurrent cold pulls of a 256 MiB layer over three replicas: one upstream GET, every client verified, first bytes before the fill ends', { timeout: 240_000 }, async () => {
  hub.resetStats();
  // Slow enough upstream that the fill is surely still running when every client has its first byte.
  hub.throttle(24 * MiB);
  const path = `/v2/acme/big/blobs/${big.digest}`;
  const streamsBefore = (await Promise.all(replicas.map((m) => metric(m, 'stevedore_cluster_peer_streams_total')))).reduce((a, b) => a + b, 0);
  let started = 0;
  const pulls = Array.from({ length: 24 }, (_, i) => pullBlob(`${replicas[i % 3]!.url}${path}`, () => (started += 1)));
  try {
    await waitFor('every client to get its first byte', () => started === 24, 120_000);
    const servedSoFar = hub.stats().bytesServed;
    assert.ok(servedSoFar < big.size, `the upstream had sent ${servedSoFar} of ${big.size} bytes when the last client got its first byte`);
  } finally {
    hub.throttle(null);
  }
  const results = await Promise.all(pulls);
  for (const r of results) assert.deepEqual(r, { status: 200, digest: big.digest, bytes: big.size });
  assert.equal(blobGets(big.digest), 1, 'one upstream GET for the whole cluster');
  const streams = (await Promise.all(replicas.map((m) => metric(m, 'stevedore_cluster_peer_streams_total')))).reduce((a, b) => a + b, 0);
  assert.equal(streams - streamsBefore, 2, 'the two replicas that did not fill it streamed it from the one that did');
  await waitForAsync('the object in the bucket', async () => (await rgw.keys(BUCKET, keyOf(big.digest))).length === 1, 30_000);
  assert.deepEqual((await rgw.uploads(BUCKET)).filter((u) => u.key === keyOf(big.digest)), []);
});

cluster.test('the peer endpoint: 401 without or with a wrong secret, blobs by digest only', { timeout: 30_000 }, async () => {
  const a = replicas[0]!;
  const path = `/_stevedore/peer/blobs/${big.digest}`;
  for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong-secret' }, { authorization: `Basic ${Buffer.from(`x:${SECRET}`).toString('base64')}` }]) {
    const res = await get(`${a.url}${path}`, headers);
    assert.equal(res.status, 401);
    assert.equal((JSON.parse(res.body.toString()) as { errors: { code: string }[] }).errors[0]!.code, 'UNAUTHORIZED');
    assert.ok(res.body.length < 1000, 'no blob bytes');
  }
  const auth = { authorization: `Bearer ${SECRET}` };
  const bad = await get(`${a.url}/_stevedore/peer/blobs/..%2F..%2Findex.db`, auth);
  assert.equal(bad.status, 400);
  assert.equal((JSON.parse(bad.body.toString()) as { errors: { code: string }[] }).errors[0]!.code, 'DIGEST_INVALID');
  const unknown = await get(`${a.url}/_stevedore/peer/blobs/sha256:${'0'.repeat(64)}`, auth);
  assert.equal(unknown.status, 404);
  const ranged = await get(`${a.url}${path}`, { ...auth, range: 'bytes=100-199' });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers['content-range'], `bytes 100-199/${big.size}`);
  assert.equal(ranged.body.length, 100);
});

cluster.test('a replica that sends wrong bytes is caught by the digest: the client never gets a complete body, nothing is kept, and the retry fetches upstream', { timeout: 60_000 }, async () => {
  const blob = await pushBlob(registry.url, 'acme/big', { size: 6 * MiB, seed: 'cluster-liar' });
  const liarBytes = Buffer.alloc(blob.size, 0x5a);
  // A replica that claims the fill and serves the right length of the wrong bytes.
  const liar = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${SECRET}` || !req.url?.endsWith(blob.digest)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': String(blob.size), 'content-type': 'application/octet-stream' });
    res.end(liarBytes);
  });
  await new Promise<void>((resolve) => liar.listen(0, '127.0.0.1', resolve));
  try {
    const liarUrl = `http://127.0.0.1:${(liar.address() as AddressInfo).port}`;
    const [replicasKey] = await redis.keys('*:replicas');
    assert.ok(replicasKey, 'the replica registry is in Redis');
    const prefix = replicasKey.slice(0, -'replicas'.length);
    await redis.command('HSET', replicasKey, 'liar', JSON.stringify({ url: liarUrl, startedAt: 0 }));
    await redis.command('SET', `${prefix}fill:${blob.digest}`, 'liar|999999', 'PX', '30000');
    hub.resetStats();
    const a = replicas[0]!;
    const first = await pullBlob(`${a.url}/v2/acme/big/blobs/${blob.digest}`).catch((err: Error) => ({ status: 0, digest: err.message, bytes: -1 }));
    assert.ok(first.digest !== blob.digest && first.bytes < blob.size, `the client got no complete body: ${JSON.stringify(first)}`);
    assert.equal(blobGets(blob.digest), 0, 'the first attempt streamed from the liar');
    await waitForAsync('the failed fill to be gone', async () => (await rgw.keys(BUCKET, keyOf(blob.digest))).length === 0 && (await get(`${a.url}/_stevedore/peer/blobs/${blob.digest}`, { authorization: `Bearer ${SECRET}` })).status === 404);
    const second = await pullBlob(`${a.url}/v2/acme/big/blobs/${blob.digest}`);
    assert.deepEqual(second, { status: 200, digest: blob.digest, bytes: blob.size });
    assert.equal(blobGets(blob.digest), 1, 'the retry fetched it upstream, not from the liar');
    // Stored once verified, just after the client's last byte.
    await waitForAsync('the object in the bucket', async () => (await rgw.keys(BUCKET, keyOf(blob.digest))).length === 1);
    const object = await rgw.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: keyOf(blob.digest) }));
    const hash = createHash('sha256');
    for await (const chunk of object.Body as AsyncIterable<Buffer>) hash.update(chunk);
    assert.equal(`sha256:${hash.digest('hex')}`, blob.digest, 'only the verified blob is in the bucket');
    await redis.command('HDEL', replicasKey, 'liar');
  } finally {
    liar.close();
  }
});

cluster.test('a stored mark whose object is not in the bucket does not stop the fill', { timeout: 60_000 }, async () => {
  const blob = await pushBlob(registry.url, 'acme/big', { size: 2 * MiB, seed: 'cluster-stale-mark' });
  const [replicasKey] = await redis.keys('*:replicas');
  assert.ok(replicasKey);
  await redis.command('SET', `${replicasKey.slice(0, -'replicas'.length)}fill:${blob.digest}`, 'stored', 'PX', '60000');
  hub.resetStats();
  assert.deepEqual(await pullBlob(`${replicas[1]!.url}/v2/acme/big/blobs/${blob.digest}`), { status: 200, digest: blob.digest, bytes: blob.size });
  assert.equal(blobGets(blob.digest), 1);
});

cluster.test('redis-server killed mid-test: pulls keep succeeding, each replica alone, and the shared dedup returns when it restarts', { timeout: 180_000 }, async () => {
  await redis.kill();
  await waitForAsync('every replica to notice', async () => (await Promise.all(replicas.map(clusterView))).every((v) => !v.redisConnected), 30_000);
  hub.resetStats();
  const alone = await pushBlob(registry.url, 'acme/big', { size: 4 * MiB, seed: 'cluster-no-redis' });
  const path = `/v2/acme/big/blobs/${alone.digest}`;
  const results = await Promise.all(replicas.flatMap((m) => [pullBlob(`${m.url}${path}`), pullBlob(`${m.url}${path}`)]));
  for (const r of results) assert.deepEqual(r, { status: 200, digest: alone.digest, bytes: alone.size });
  const gets = blobGets(alone.digest);
  assert.ok(gets >= 1 && gets <= 3, `at most one upstream GET per replica, got ${gets}`);
  assert.ok((await metric(replicas[0]!, 'stevedore_cluster_redis_errors_total')) > 0);

  await redis.start();
  await waitForAsync('every replica to rejoin', async () => (await Promise.all(replicas.map(clusterView))).every((v) => v.redisConnected && v.replicas.length === 3), 30_000);
  hub.resetStats();
  const shared = await pushBlob(registry.url, 'acme/big', { size: 32 * MiB, seed: 'cluster-redis-back' });
  hub.throttle(32 * MiB);
  const again = await Promise.all(replicas.flatMap((m) => [pullBlob(`${m.url}/v2/acme/big/blobs/${shared.digest}`), pullBlob(`${m.url}/v2/acme/big/blobs/${shared.digest}`)]));
  hub.throttle(null);
  for (const r of again) assert.deepEqual(r, { status: 200, digest: shared.digest, bytes: shared.size });
  assert.equal(blobGets(shared.digest), 1, 'one upstream GET for the whole cluster again');
});

cluster.test('kill -9 of the replica filling a blob mid-fill: every pull succeeds, one complete object, no stale upload', { timeout: 300_000 }, async () => {
  hub.resetStats();
  hub.throttle(16 * MiB);
  const path = `/v2/acme/big/blobs/${bigToo.digest}`;
  let started = 0;
  const pulls = Array.from({ length: 12 }, (_, i) => pullWithRetry(replicas[i % 3]!.url, path, bigToo, () => (started += 1)));
  let owner: MirrorProcess | undefined;
  try {
    await waitFor('every client to get its first byte', () => started >= 12, 120_000);
    await waitFor('a sixth of the blob upstream', () => hub.stats().bytesServed > bigToo.size / 6, 60_000);
    assert.ok(hub.stats().bytesServed < bigToo.size, 'the fill is still running');
    const fillKeys = await redis.keys(`*fill:${bigToo.digest}`);
    assert.equal(fillKeys.length, 1, JSON.stringify(fillKeys));
    const holder = String(await redis.command('GET', fillKeys[0]!)).split('|')[0];
    const ids = await Promise.all(replicas.map(async (m) => (await clusterView(m)).self.id));
    owner = replicas[ids.indexOf(holder!)];
    assert.ok(owner, `the lease holder ${holder} is one of ${ids.join(', ')}`);
    await owner.crash();
  } finally {
    hub.throttle(null);
  }
  const outcomes = await Promise.all(pulls);
  assert.equal(outcomes.length, 12);
  assert.ok(outcomes.filter((o) => o.attempts > 1).length >= 4, 'the dead replica\'s clients retried');
  const survivors = replicas.filter((m) => m !== owner);
  const takeovers = (await Promise.all(survivors.map((m) => metric(m, 'stevedore_cluster_lease_takeovers_total')))).reduce((a, b) => a + b, 0);
  assert.equal(takeovers, 1, 'one survivor took the fill over');
  await waitForAsync('one complete object in the bucket', async () => (await rgw.keys(BUCKET, keyOf(bigToo.digest))).length === 1, 30_000);
  const object = await rgw.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: keyOf(bigToo.digest) }));
  const hash = createHash('sha256');
  for await (const chunk of object.Body as AsyncIterable<Buffer>) hash.update(chunk);
  assert.equal(`sha256:${hash.digest('hex')}`, bigToo.digest, 'the object in the bucket is the whole blob');
  assert.deepEqual((await rgw.uploads(BUCKET)).filter((u) => u.key === keyOf(bigToo.digest)), [], 'the dead replica\'s upload was aborted');
  // The owner's GET, and the survivor's resuming one.
  const gets = hub.stats().requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${bigToo.digest}`) && r.server === 'hub');
  assert.equal(gets.length, 2, JSON.stringify(gets));
});
