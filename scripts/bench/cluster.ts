// The benchmark's cluster rows: three Stevedore replicas on one RGW bucket and
// one redis-server, against three distribution proxies on one bucket (its S3
// driver, the same gateway), each trio behind its own nginx round-robin
// balancer. Cold fan-in (upstream GETs, upstream MiB, wall, peak RSS per
// replica), aggregate warm throughput through the balancer, and S3 requests
// per blob of a cold image pull, counted by a proxy in front of the gateway.
import { startRgw, type Rgw } from '../../test/support/rgw.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { startBalancer, type Balancer } from '../../test/support/nginx-balancer.js';
import { freePort, startRegistry, type RegistryHandle } from '../../test/support/registry.js';
import { startMirrorProcess, type MirrorProcess } from '../../test/support/stevedore.js';
import { startCountingProxy } from './s3.js';
import type { HubProcess } from './servers.js';
import { peakRss } from './servers.js';
import { better, delta, gibps, mib, parallelGets, secs, skopeoPull, type Row } from './scenarios.js';

interface Setup {
  hub: HubProcess;
  user: string;
  password: string;
  bigDigest: string;
  bigBytes: number;
  log(line: string): void;
}

const REPLICAS = 3;
const SECRET = 'bench-cluster-secret-0123456789';

/** The cluster rows; everything they start is stopped before they return. */
export async function clusterRows(setup: Setup): Promise<Row[]> {
  const { hub, log } = setup;
  const rows: Row[] = [];
  const stops: (() => Promise<void>)[] = [];
  let rgw: Rgw | undefined;
  try {
    rgw = await startRgw();
    const gateway = rgw;
    stops.push(() => gateway.stop());
    await rgw.createBucket('bench-cluster');
    await rgw.createBucket('bench-cluster-peer');
    const redis: RedisServer = await startRedis();
    stops.push(() => redis.stop());
    const usCounter = await startCountingProxy(rgw.endpoint);
    const peerCounter = await startCountingProxy(rgw.endpoint);
    stops.push(() => usCounter.stop(), () => peerCounter.stop());

    const replicas: MirrorProcess[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      const port = await freePort();
      const m = await startMirrorProcess({
        port,
        compiled: true,
        upstreams: [{ registry: 'docker.io', url: hub.url, username: setup.user, password: setup.password, timeouts: { body: '300s' } }],
        extra: {
          storage: { driver: 's3', s3: { bucket: 'bench-cluster', endpoint: usCounter.url, region: gateway.region, forcePathStyle: true, accessKeyId: gateway.accessKeyId, secretAccessKey: gateway.secretAccessKey } },
          cluster: { redis: redis.url, advertise: `http://127.0.0.1:${port}`, secret: SECRET },
          // Behind a balancer every client has its address.
          limits: { maxConnectionsPerClient: 0, maxFillsPerClient: 0 },
        },
      });
      replicas.push(m);
      stops.push(() => m.stop());
    }
    const peers: RegistryHandle[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      const p = await startRegistry({ proxy: { remoteurl: hub.url, username: setup.user, password: setup.password }, s3: { endpoint: peerCounter.url, bucket: 'bench-cluster-peer', accessKey: gateway.accessKeyId, secretKey: gateway.secretAccessKey, region: gateway.region } });
      peers.push(p);
      stops.push(() => p.stop());
    }
    const usLb: Balancer = await startBalancer(replicas.map((r) => r.url));
    const peerLb: Balancer = await startBalancer(peers.map((p) => p.url));
    stops.push(() => usLb.stop(), () => peerLb.stop());
    const host = (url: string): string => url.replace('http://', '');
    for (const lb of [usLb, peerLb]) await skopeoPull(host(lb.url), 'small/img0:v1');

    const pidsOf = (procs: { pid: number }[]): Record<string, number> => Object.fromEntries(procs.map((p, i) => [`r${i}`, p.pid]));
    const maxPeak = (peaks: Record<string, number>): number => Math.max(...Object.values(peaks));

    log('cluster: cold pull of the 60 MiB image through the balancer, S3 requests counted');
    const blobs = 6;
    usCounter.reset();
    const usColdRun = await peakRss(pidsOf(replicas), () => delta(hub, () => skopeoPull(host(usLb.url), 'library/app60:v1')));
    const usCold = usColdRun.value;
    const usS3 = usCounter.counts();
    peerCounter.reset();
    const peerColdRun = await peakRss(pidsOf(peers), () => delta(hub, () => skopeoPull(host(peerLb.url), 'library/app60:v1')));
    const peerCold = peerColdRun.value;
    const peerS3 = peerCounter.counts();
    rows.push({ scenario: `cluster of ${REPLICAS}, cold pull of the 60 MiB image`, metric: 'S3 requests per blob', peer: (peerS3.total / blobs).toFixed(1), stevedore: (usS3.total / blobs).toFixed(1), ratio: better(peerS3.total, usS3.total), reference: `upstream blob GETs: distribution ${peerCold.counts.blobGet}, Stevedore ${usCold.counts.blobGet}`, rss: { peer: maxPeak(peerColdRun.peaks), stevedore: maxPeak(usColdRun.peaks) } });

    log(`cluster: 32 clients over ${REPLICAS} replicas pulling the ${mib(setup.bigBytes)} MiB layer cold`);
    const path = `/v2/library/big/blobs/${setup.bigDigest}`;
    const spread = async (bases: string[]): Promise<void> => {
      await Promise.all(bases.map((base, i) => parallelGets(`${base}${path}`, Math.floor(32 / bases.length) + (i < 32 % bases.length ? 1 : 0), setup.bigBytes)));
    };
    const usFan = await peakRss(pidsOf(replicas), () => delta(hub, () => spread(replicas.map((r) => r.url))));
    const peerFan = await peakRss(pidsOf(peers), () => delta(hub, () => spread(peers.map((p) => p.url))));
    const scenario = `cluster of ${REPLICAS}, 32 cold pulls of ${mib(setup.bigBytes)} MiB`;
    const fanRss = { peer: maxPeak(peerFan.peaks), stevedore: maxPeak(usFan.peaks) };
    rows.push({ scenario, metric: 'upstream GETs of the layer', peer: peerFan.value.counts.blobGet, stevedore: usFan.value.counts.blobGet, ratio: better(peerFan.value.counts.blobGet, usFan.value.counts.blobGet), rss: fanRss });
    rows.push({ scenario, metric: 'MiB fetched upstream', peer: mib(peerFan.value.counts.bytesServed), stevedore: mib(usFan.value.counts.bytesServed), ratio: better(peerFan.value.counts.bytesServed, usFan.value.counts.bytesServed), rss: fanRss });
    rows.push({ scenario, metric: 'wall time (s)', peer: secs(peerFan.value.ms), stevedore: secs(usFan.value.ms), ratio: better(peerFan.value.ms, usFan.value.ms), rss: fanRss });
    rows.push({ scenario, metric: 'peak RSS of the largest replica (MiB)', peer: fanRss.peer, stevedore: fanRss.stevedore, ratio: better(fanRss.peer, fanRss.stevedore), reference: `per replica: Stevedore ${JSON.stringify(usFan.peaks)}; bound 200 MiB`, rss: fanRss });

    log('cluster: aggregate warm throughput through the balancer, 8 streams');
    const best = { us: Infinity, peer: Infinity };
    const warmRss = { peer: 0, stevedore: 0 };
    for (let round = 0; round < 3; round++) {
      const us = await peakRss(pidsOf(replicas), () => parallelGets(`${usLb.url}${path}`, 8, setup.bigBytes));
      // distribution's S3 driver may answer a stored blob with a redirect to the bucket: follow it.
      const peer = await peakRss(pidsOf(peers), () => parallelGets(`${peerLb.url}${path}`, 8, setup.bigBytes, { followRedirects: true }));
      best.us = Math.min(best.us, us.value);
      best.peer = Math.min(best.peer, peer.value);
      warmRss.stevedore = Math.max(warmRss.stevedore, maxPeak(us.peaks));
      warmRss.peer = Math.max(warmRss.peer, maxPeak(peer.peaks));
    }
    rows.push({ scenario: `cluster of ${REPLICAS}, warm blob through the balancer, 8 streams (best of 3)`, metric: 'GiB/s', peer: gibps(setup.bigBytes * 8, best.peer), stevedore: gibps(setup.bigBytes * 8, best.us), ratio: better(best.peer, best.us), rss: warmRss });
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
  return rows;
}
