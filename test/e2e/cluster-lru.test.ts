// Housekeeping in a cluster: two replicas on one RGW bucket and one
// redis-server, and the quota enforced by the replica holding the leader
// lock, over everything in the bucket (whichever replica stored it) and in
// the order of the LRU every replica's accesses feed.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, type PushedBlob } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { get } from '../support/http.js';
import { rgwUnavailableReason, startRgw, type Rgw } from '../support/rgw.js';
import { redisUnavailableReason, startRedis, type RedisServer } from '../support/redis.js';
import { requirement } from '../support/requirements.js';
import { waitForAsync } from '../support/wait.js';

const MiB = 1024 * 1024;
const BUCKET = 'stevedore-cluster-lru';
const cluster = requirement('a cluster (Ceph RGW, redis-server)', (await rgwUnavailableReason()) ?? (await redisUnavailableReason()));

let registry: RegistryHandle;
let hub: HubDouble;
let rgw: Rgw;
let redis: RedisServer;
const blobs: PushedBlob[] = [];
const replicas: MirrorProcess[] = [];

before(async () => {
  if (cluster.missing) return;
  registry = await startRegistry();
  for (let i = 0; i < 4; i++) blobs.push(await pushBlob(registry.url, 'acme/lru', { size: 3 * MiB, seed: `cluster-lru-${i}` }));
  hub = await startHubDouble({ upstream: registry.url });
  rgw = await startRgw();
  await rgw.createBucket(BUCKET);
  redis = await startRedis();
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    replicas.push(
      await startMirrorProcess({
        port,
        upstreams: [{ registry: 'docker.io', url: hub.url }],
        // A quota of 10 MiB, swept only when asked; accesses flushed promptly.
        cache: { maxSize: '10MiB', lowWater: 0.75, sweepInterval: '1h', accessFlushInterval: '100ms' },
        extra: {
          storage: { driver: 's3', s3: { bucket: BUCKET, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } },
          cluster: { redis: redis.url, advertise: `http://127.0.0.1:${port}`, secret: 'cluster-lru-secret-0123456789' },
        },
      }),
    );
  }
});

after(async () => {
  for (const m of replicas) await m.stop();
  await redis?.stop();
  await hub?.stop();
  await registry?.stop();
  await rgw?.stop();
});

const keyOf = (digest: string): string => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;

async function pull(m: MirrorProcess, blob: PushedBlob): Promise<void> {
  const res = await request(`${m.url}/v2/acme/lru/blobs/${blob.digest}`);
  const hash = createHash('sha256');
  for await (const chunk of res.body) hash.update(chunk as Buffer);
  assert.equal(res.statusCode, 200);
  assert.equal(`sha256:${hash.digest('hex')}`, blob.digest);
}

/** The cluster-wide LRU as Redis holds it, least recently used first. */
async function lruOrder(): Promise<string[]> {
  const [key] = await redis.keys('*:access');
  if (!key) return [];
  return (await redis.command('ZRANGE', key, '0', '-1')) as string[];
}

/** Pulls through `m` and waits until the access is the most recent one in the cluster's LRU. */
async function access(m: MirrorProcess, blob: PushedBlob): Promise<void> {
  await pull(m, blob);
  await waitForAsync(`${blob.digest} to be the most recent access`, async () => (await lruOrder()).at(-1) === blob.digest);
}

cluster.test('the leader evicts by the cluster-wide LRU over the whole bucket, not by what its own index saw', { timeout: 120_000 }, async () => {
  const views = await Promise.all(replicas.map(async (m) => JSON.parse((await get(`${m.url}/api/cluster`)).body.toString()) as { self: { id: string }; replicas: { id: string; leader: boolean }[] }));
  await waitForAsync('a leader', async () => {
    const view = JSON.parse((await get(`${replicas[0]!.url}/api/cluster`)).body.toString()) as { replicas: { leader: boolean }[] };
    return view.replicas.filter((r) => r.leader).length === 1;
  });
  const leaderId = (JSON.parse((await get(`${replicas[0]!.url}/api/cluster`)).body.toString()) as { replicas: { id: string; leader: boolean }[] }).replicas.find((r) => r.leader)!.id;
  const leader = replicas[views.findIndex((v) => v.self.id === leaderId)]!;
  const other = replicas.find((m) => m !== leader)!;
  const [b0, b1, b2, b3] = blobs as [PushedBlob, PushedBlob, PushedBlob, PushedBlob];

  // The leader saw b0 first and b1 next; the other replica stored b2, then used b0 again, then stored b3.
  await access(leader, b0);
  await access(leader, b1);
  await access(other, b2);
  await access(other, b0);
  await access(other, b3);
  assert.deepEqual(await lruOrder(), [b1.digest, b2.digest, b0.digest, b3.digest]);
  for (const b of blobs) assert.deepEqual(await rgw.keys(BUCKET, keyOf(b.digest)), [keyOf(b.digest)]);

  // 12 MiB in the bucket against a 10 MiB quota, down to 7.5: b1 and b2 go, the least recent cluster-wide.
  const dry = await request(`${leader.url}/api/gc`, { method: 'POST', body: JSON.stringify({ dryRun: true }), headers: { 'content-type': 'application/json' } });
  const planned = (await dry.body.json()) as { removed: { digest: string; reason: string }[] };
  assert.equal(dry.statusCode, 200);
  assert.deepEqual(planned.removed.map((r) => [r.digest, r.reason]), [[b1.digest, 'quota'], [b2.digest, 'quota']]);
  for (const b of blobs) assert.equal((await rgw.keys(BUCKET, keyOf(b.digest))).length, 1, 'a dry run removes nothing');

  const run = await request(`${leader.url}/api/gc`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
  const report = (await run.body.json()) as { removed: { digest: string }[] };
  assert.equal(run.statusCode, 200);
  assert.deepEqual(report.removed.map((r) => r.digest), [b1.digest, b2.digest]);
  for (const b of [b1, b2]) assert.deepEqual(await rgw.keys(BUCKET, keyOf(b.digest)), [], `${b.digest} left the bucket`);
  for (const b of [b0, b3]) assert.deepEqual(await rgw.keys(BUCKET, keyOf(b.digest)), [keyOf(b.digest)], `${b.digest} stays`);
  assert.deepEqual(await lruOrder(), [b0.digest, b3.digest], 'the evicted digests left the LRU');

  // The other replica still indexed b2: its next pull finds it gone and fetches it again, verified.
  hub.resetStats();
  await pull(other, b2);
  assert.equal(hub.stats().requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${b2.digest}`)).length, 1);
});
