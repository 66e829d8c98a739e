// The benchmark's object-storage rows: Stevedore on S3 and distribution's
// proxy on its own S3 driver, both on a real Ceph RADOS Gateway. S3 requests
// are counted by a small proxy in front of the gateway, one per server so that
// one's background work is not counted as the other's (SigV4 signs the Host
// header, which the proxy passes on unchanged); throughput is measured on the
// gateway directly, against a plain GET of the same object.
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { startRgw, type Rgw } from '../../test/support/rgw.js';
import { freePort, startRegistry, type RegistryHandle } from '../../test/support/registry.js';
import { startMirrorProcess, type MirrorProcess } from '../../test/support/stevedore.js';
import type { HubProcess } from './servers.js';
import { peakRss } from './servers.js';
import { better, delta, gibps, mib, parallelGets, secs, skopeoPull, type Row } from './scenarios.js';

export interface S3Counts {
  get: number;
  head: number;
  put: number;
  /** UploadPart, CreateMultipartUpload, CompleteMultipartUpload and the like. */
  multipart: number;
  list: number;
  delete: number;
  other: number;
  total: number;
}

const zero = (): S3Counts => ({ get: 0, head: 0, put: 0, multipart: 0, list: 0, delete: 0, other: 0, total: 0 });

/** Forwards every request to the gateway, byte for byte, and counts them by kind. */
export async function startCountingProxy(target: string): Promise<{ url: string; counts(): S3Counts; reset(): void; stop(): Promise<void> }> {
  const upstream = new URL(target);
  let counts = zero();
  const kind = (req: IncomingMessage): keyof S3Counts => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.searchParams.has('uploadId') || url.searchParams.has('uploads')) return 'multipart';
    if (req.method === 'GET' && (url.searchParams.has('list-type') || url.pathname.split('/').filter(Boolean).length <= 1)) return 'list';
    return ({ GET: 'get', HEAD: 'head', PUT: 'put', DELETE: 'delete' } as Record<string, keyof S3Counts>)[req.method ?? ''] ?? 'other';
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    counts[kind(req)] += 1;
    counts.total += 1;
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts: () => ({ ...counts }),
    reset: () => void (counts = zero()),
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

interface Setup {
  hub: HubProcess;
  user: string;
  password: string;
  bigDigest: string;
  bigBytes: number;
  /** Stevedore's cold pull of the 60 MiB image on its filesystem store, for the comparison. */
  coldFsMs: number;
  /** Stevedore's peak RSS on its filesystem store while 32 clients pulled the big layer cold. */
  fanInFsPeak: number;
  log(line: string): void;
}

/** The S3 rows; the gateway and the servers on it are stopped before it returns. */
export async function s3Rows(setup: Setup): Promise<Row[]> {
  const rows: Row[] = [];
  const { hub, log } = setup;
  let rgw: Rgw | undefined;
  const proxies: Awaited<ReturnType<typeof startCountingProxy>>[] = [];
  const started: (MirrorProcess | RegistryHandle)[] = [];
  try {
    rgw = await startRgw();
    await rgw.createBucket('bench-stevedore');
    await rgw.createBucket('bench-peer');
    const counter = async (): Promise<Awaited<ReturnType<typeof startCountingProxy>>> => {
      const proxy = await startCountingProxy(rgw!.endpoint);
      proxies.push(proxy);
      return proxy;
    };
    const usProxy = await counter();
    const peerProxy = await counter();
    const stevedoreOn = async (endpoint: string, bucket: string): Promise<MirrorProcess> => {
      const m = await startMirrorProcess({
        port: await freePort(),
        compiled: true,
        upstreams: [{ registry: 'docker.io', url: hub.url, username: setup.user, password: setup.password, timeouts: { body: '300s' } }],
        extra: { storage: { driver: 's3', s3: { bucket, endpoint, region: rgw!.region, forcePathStyle: true, accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey } } },
      });
      started.push(m);
      return m;
    };
    const peerOn = async (endpoint: string): Promise<RegistryHandle> => {
      const p = await startRegistry({ proxy: { remoteurl: hub.url, username: setup.user, password: setup.password }, s3: { endpoint, bucket: 'bench-peer', accessKey: rgw!.accessKeyId, secretKey: rgw!.secretAccessKey, region: rgw!.region } });
      started.push(p);
      return p;
    };
    const host = (url: string): string => url.replace('http://', '');
    const counted = await stevedoreOn(usProxy.url, 'bench-stevedore');
    const countedPeer = await peerOn(peerProxy.url);
    for (const url of [counted.url, countedPeer.url]) await skopeoPull(host(url), 'small/img0:v1');

    // Peak RSS of both servers while each pulls (sampled from /proc; nothing else changes).
    const rssOf = async <T>(work: () => Promise<T>): Promise<{ value: T; peaks: Record<string, number> }> => peakRss({ peer: countedPeer.pid, stevedore: counted.pid }, work);

    log('S3: cold pull of the 60 MiB image, S3 requests counted');
    const blobs = 6; // config and five layers
    usProxy.reset();
    const coldUsRun = await rssOf(() => delta(hub, () => skopeoPull(host(counted.url), 'library/app60:v1')));
    const coldUs = coldUsRun.value;
    const usCold = usProxy.counts();
    peerProxy.reset();
    const coldPeerRun = await rssOf(() => delta(hub, () => skopeoPull(host(countedPeer.url), 'library/app60:v1')));
    const coldPeer = coldPeerRun.value;
    const peerCold = peerProxy.counts();
    const coldRss = { peer: coldPeerRun.peaks.peer!, stevedore: coldUsRun.peaks.stevedore! };
    const perBlob = (c: S3Counts): string => (c.total / blobs).toFixed(1);
    rows.push({ scenario: 'S3, cold pull of the 60 MiB image', metric: 'S3 requests per blob', peer: perBlob(peerCold), stevedore: perBlob(usCold), ratio: better(peerCold.total, usCold.total), reference: `Stevedore ${JSON.stringify(usCold)}; peer ${JSON.stringify(peerCold)}`, rss: coldRss });
    rows.push({ scenario: 'S3, cold pull of the 60 MiB image', metric: 'upstream blob GETs', peer: coldPeer.counts.blobGet, stevedore: coldUs.counts.blobGet, ratio: better(coldPeer.counts.blobGet, coldUs.counts.blobGet), rss: coldRss });

    log('S3: warm blob GETs, S3 requests counted');
    const layerPath = '/v2/library/big/blobs/';
    usProxy.reset();
    const warmUsRun = await rssOf(() => skopeoPull(host(counted.url), 'library/app60:v1'));
    const usWarm = usProxy.counts();
    peerProxy.reset();
    const warmPeerRun = await rssOf(() => skopeoPull(host(countedPeer.url), 'library/app60:v1'));
    const peerWarm = peerProxy.counts();
    rows.push({ scenario: 'S3, warm pull of the 60 MiB image', metric: 'S3 requests per blob', peer: perBlob(peerWarm), stevedore: perBlob(usWarm), ratio: better(peerWarm.total, usWarm.total), reference: `Stevedore ${JSON.stringify(usWarm)}; peer ${JSON.stringify(peerWarm)}`, rss: { peer: warmPeerRun.peaks.peer!, stevedore: warmUsRun.peaks.stevedore! } });

    log('S3: cold pull time against the filesystem store, and 32 cold pulls of the big layer (memory)');
    // On the gateway directly, with a bucket of its own: nothing counted, nothing cached yet.
    await rgw.createBucket('bench-fresh');
    const fresh = await stevedoreOn(rgw.endpoint, 'bench-fresh');
    await skopeoPull(host(fresh.url), 'small/img0:v1');
    const coldS3Run = await peakRss({ stevedore: fresh.pid }, () => delta(hub, () => skopeoPull(host(fresh.url), 'library/app60:v1')));
    const coldS3 = coldS3Run.value;
    rows.push({ scenario: 'S3, cold pull of the 60 MiB image', metric: 'wall time (s), S3 against the filesystem store', peer: '–', stevedore: secs(coldS3.ms), reference: `filesystem store ${secs(setup.coldFsMs)} s; ${(coldS3.ms / setup.coldFsMs).toFixed(2)}×`, rss: { stevedore: coldS3Run.peaks.stevedore! } });
    const fanIn = await peakRss({ stevedore: fresh.pid }, () => delta(hub, () => parallelGets(`${fresh.url}${layerPath}${setup.bigDigest}`, 32, setup.bigBytes)));
    rows.push({ scenario: `S3, 32 cold pulls of ${mib(setup.bigBytes)} MiB`, metric: 'peak RSS (MiB) / upstream GETs', peer: '–', stevedore: `${fanIn.peaks.stevedore} / ${fanIn.value.counts.blobGet}`, reference: `wall ${secs(fanIn.value.ms)} s; filesystem store ${setup.fanInFsPeak} MiB; bound 200 MiB`, rss: { stevedore: fanIn.peaks.stevedore! } });

    log('S3: warm blob throughput against a plain GET of the object from the gateway');
    await parallelGets(`${fresh.url}${layerPath}${setup.bigDigest}`, 1, setup.bigBytes); // verified once: later reads trust it
    const presigned = await getSignedUrl(rgw.client, new GetObjectCommand({ Bucket: 'bench-fresh', Key: `blobs/sha256/${setup.bigDigest.slice(7, 9)}/${setup.bigDigest.slice(7)}` }), { expiresIn: 3600 });
    const best = { us: Infinity, gateway: Infinity };
    let warmPeak = 0;
    for (let round = 0; round < 3; round++) {
      const us = await peakRss({ stevedore: fresh.pid }, () => parallelGets(`${fresh.url}${layerPath}${setup.bigDigest}`, 1, setup.bigBytes));
      best.us = Math.min(best.us, us.value);
      warmPeak = Math.max(warmPeak, us.peaks.stevedore!);
      best.gateway = Math.min(best.gateway, await parallelGets(presigned, 1, setup.bigBytes));
    }
    rows.push({ scenario: 'S3, warm blob, 1 stream (best of 3)', metric: 'GiB/s', peer: '–', stevedore: gibps(setup.bigBytes, best.us), reference: `plain GET from the gateway ${gibps(setup.bigBytes, best.gateway)} GiB/s; ${(best.gateway / best.us).toFixed(2)}× of it`, rss: { stevedore: warmPeak } });
  } finally {
    for (const s of started.reverse()) await s.stop();
    for (const proxy of proxies) await proxy.stop();
    await rgw?.stop();
  }
  return rows;
}
