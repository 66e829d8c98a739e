// npm run bench: Stevedore and CNCF distribution in proxy mode, side by side,
// on the same upstream (docker-registry behind the Docker Hub double) and the
// same data. Prints a markdown table and writes JSON to bench-results/.
// Everything runs on 127.0.0.1 and is stopped by PID at the end.
import { execFileSync } from 'node:child_process';
import { chmodSync, createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { startRegistry, type RegistryHandle } from '../../test/support/registry.js';
import { bigBlob, MediaTypes, pushBlob, pushImage, pushIndex, putManifest } from '../../test/support/seed.js';
import type { MirrorProcess } from '../../test/support/stevedore.js';
import { startNginxFront, type NginxFront } from '../../test/support/nginx-front.js';
import { peakRss, startHubProcess, startNginx, startPeer, startStevedore, type HubProcess, type Nginx } from './servers.js';
import { rgwUnavailableReason } from '../../test/support/rgw.js';
import { s3Rows } from './s3.js';
import { clusterRows } from './cluster.js';
import { redisUnavailableReason } from '../../test/support/redis.js';
import { balancerUnavailableReason } from '../../test/support/nginx-balancer.js';
import { better, cleanupScratch, delta, gibps, hotLoad, mib, parallelGets, rssCell, secs, skopeoPull, type Row } from './scenarios.js';
import { coldPullRows } from './cold-pulls.js';
import { restartRows, restartSizes, restartTable } from './restart.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const BIG = Number(process.env.BENCH_BIG_BYTES ?? GiB);
const USER = 'bench';
const PASSWORD = 'bench-password';
const rows: Row[] = [];
/** Markdown tables printed after the main one (the cold pulls request by request). */
const tables: string[] = [];
const COLD_ROUNDS = Number(process.env.BENCH_COLD_ROUNDS ?? 5);
const log = (line: string): void => void process.stderr.write(`${line}\n`);

async function seed(origin: RegistryHandle, nginxRoot: string): Promise<{ bigDigest: string; smallDigest: string }> {
  log('seeding: a 5-layer ~60 MiB image, a big layer, a multi-arch index and 200 small images…');
  await pushImage(origin.url, 'library/app60', 'v1', { layers: [12 * MiB, 12 * MiB, 12 * MiB, 12 * MiB, 12 * MiB], format: 'docker' });
  const big = await pushBlob(origin.url, 'library/big', { size: BIG, seed: 'bench-big' });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const configBlob = await pushBlob(origin.url, 'library/big', config);
  await putManifest(origin.url, 'library/big', 'v1', MediaTypes.dockerManifest, Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.dockerManifest,
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configBlob.digest, size: config.length },
    layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: big.digest, size: big.size }],
  })));
  await pushIndex(origin.url, 'library/multi', 'latest', { platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }], format: 'oci', layers: [1 * MiB] });
  const small = await pushImage(origin.url, 'small/img0', 'v1', { layers: [4096], format: 'docker' });
  for (let batch = 1; batch < 200; batch += 10) {
    await Promise.all(Array.from({ length: Math.min(10, 200 - batch) }, (_, i) => pushImage(origin.url, `small/img${batch + i}`, 'v1', { layers: [4096], format: 'docker' })));
  }
  await pipeline(bigBlob(BIG, 'bench-big').stream(), createWriteStream(join(nginxRoot, 'big.bin'), { mode: 0o644 }));
  chmodSync(nginxRoot, 0o755); // nginx workers run unprivileged
  return { bigDigest: big.digest, smallDigest: small.layers[0]!.digest };
}

/** Why the cluster rows cannot run here, or undefined. */
async function clusterUnavailable(): Promise<string | undefined> {
  return (await rgwUnavailableReason()) ?? (await redisUnavailableReason()) ?? (await balancerUnavailableReason());
}

async function main(): Promise<void> {
  const started = Date.now();
  log('building Stevedore (npm run build), so the benchmark runs what production runs…');
  execFileSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
  const origin = await startRegistry();
  const nginxRoot = mkdtempSync(join(tmpdir(), 'bench-www-'));
  let hub: HubProcess | undefined;
  let peer: RegistryHandle | undefined;
  let stevedore: MirrorProcess | undefined;
  let nginx: Nginx | undefined;
  let offloading: MirrorProcess | undefined;
  let front: NginxFront | undefined;
  const restart = async (): Promise<{ peer: RegistryHandle; stevedore: MirrorProcess }> => {
    await peer?.stop();
    await stevedore?.stop();
    peer = await startPeer(hub!.url, USER, PASSWORD);
    stevedore = await startStevedore(hub!.url, USER, PASSWORD);
    return { peer, stevedore };
  };
  try {
    const { bigDigest, smallDigest } = await seed(origin, nginxRoot);
    let coldFsMs = 0;
    let fanInFsPeak = 0;
    hub = await startHubProcess(origin.url, `${USER}:${PASSWORD}`);
    nginx = await startNginx(nginxRoot);
    const host = (url: string): string => url.replace('http://', '');
    // BENCH_ONLY=cluster or =s3 runs those rows alone (they start their own servers); the
    // filesystem figures the S3 rows compare with are then not measured.
    if (process.env.BENCH_ONLY === 'cluster') {
      if (await clusterUnavailable()) log(`cluster rows NOT RUN: ${await clusterUnavailable()}`);
      else rows.push(...(await clusterRows({ hub, user: USER, password: PASSWORD, bigDigest, bigBytes: BIG, log })));
    } else if (process.env.BENCH_ONLY === 'restart') {
      tables.push(restartTable(await restartRows(restartSizes(), log)));
    } else if (process.env.BENCH_ONLY === 's3') {
      const unavailable = await rgwUnavailableReason();
      if (unavailable) log(`S3 rows NOT RUN: ${unavailable}`);
      else rows.push(...(await s3Rows({ hub, user: USER, password: PASSWORD, bigDigest, bigBytes: BIG, coldFsMs: Number.NaN, fanInFsPeak: Number.NaN, log })));
    } else {
      let servers = await restart();
      const pids = (): Record<string, number> => ({ peer: servers.peer.pid, stevedore: servers.stevedore.pid });

      // 1. Cold pulls, median of rounds with empty caches, and where each one's time goes.
      const cold = await coldPullRows({ hub, user: USER, password: PASSWORD, restart, log, rounds: COLD_ROUNDS }, [
        { label: '60 MiB image', ref: 'library/app60:v1', bytes: 60 * MiB },
        { label: `${mib(BIG)} MiB image`, ref: 'library/big:v1', bytes: BIG },
      ]);
      rows.push(...cold.rows);
      tables.push(...cold.tables);
      coldFsMs = cold.stevedoreMs['library/app60:v1']!;
      servers = await restart();
      await skopeoPull(host(servers.peer.url), 'library/app60:v1');
      await skopeoPull(host(servers.stevedore.url), 'library/app60:v1');
      // BENCH_ONLY=cold stops here.
      if (process.env.BENCH_ONLY !== 'cold') {
        // 4. Warm pull of the same image: wall time and upstream requests.
        log('warm pull');
        const warmPeerRun = await peakRss(pids(), () => delta(hub!, () => skopeoPull(host(servers.peer.url), 'library/app60:v1')));
        const warmUsRun = await peakRss(pids(), () => delta(hub!, () => skopeoPull(host(servers.stevedore.url), 'library/app60:v1')));
        const [warmPeer, warmUs] = [warmPeerRun.value, warmUsRun.value];
        const warmRss = { peer: warmPeerRun.peaks.peer!, stevedore: warmUsRun.peaks.stevedore! };
        const upstreamRequests = (c: typeof warmPeer.counts): number => c.blobGet + c.blobHead + c.manifestGet + c.manifestHead;
        rows.push({ scenario: 'warm pull, 60 MiB image', metric: 'wall time (s)', peer: secs(warmPeer.ms), stevedore: secs(warmUs.ms), ratio: better(warmPeer.ms, warmUs.ms), rss: warmRss });
        rows.push({ scenario: 'warm pull, 60 MiB image', metric: 'upstream requests', peer: upstreamRequests(warmPeer.counts), stevedore: upstreamRequests(warmUs.counts), ratio: better(upstreamRequests(warmPeer.counts), upstreamRequests(warmUs.counts)), rss: warmRss });

        // 5. Hot metadata with autocannon (64 connections).
        const manifestHeaders = { accept: `${MediaTypes.dockerManifest}, ${MediaTypes.ociManifest}` };
        for (const [label, path, method, headers] of [
          ['manifest GET by tag', '/v2/library/app60/manifests/v1', 'GET', manifestHeaders],
          ['blob HEAD', `/v2/small/img0/blobs/${smallDigest}`, 'HEAD', {}],
        ] as const) {
          log(`hot metadata: ${label}`);
          await skopeoPull(host(servers.stevedore.url), 'small/img0:v1');
          await skopeoPull(host(servers.peer.url), 'small/img0:v1');
          const p = await peakRss(pids(), () => hotLoad(`${servers.peer.url}${path}`, method, headers, 8));
          const s = await peakRss(pids(), () => hotLoad(`${servers.stevedore.url}${path}`, method, headers, 8));
          const rss = { peer: p.peaks.peer!, stevedore: s.peaks.stevedore! };
          rows.push({ scenario: `hot ${label}`, metric: 'req/s', peer: p.value.requestsPerSecond, stevedore: s.value.requestsPerSecond, ratio: better(s.value.requestsPerSecond, p.value.requestsPerSecond), reference: `errors: peer ${p.value.errors}, Stevedore ${s.value.errors}`, rss });
          rows.push({ scenario: `hot ${label}`, metric: 'p50 / p99 (ms)', peer: `${p.value.p50} / ${p.value.p99}`, stevedore: `${s.value.p50} / ${s.value.p99}`, rss });
        }

        // 2. Fan-in: N concurrent cold pulls of the big layer, fresh caches each time.
        for (const n of [8, 32]) {
          log(`fan-in: ${n} concurrent cold pulls of the big layer`);
          servers = await restart();
          const blobPath = `/v2/library/big/blobs/${bigDigest}`;
          // Warm the manifest and token paths so only the layer is measured.
          await skopeoPull(host(servers.peer.url), 'library/multi:latest').catch(() => undefined);
          const p = await peakRss(pids(), () => delta(hub!, () => parallelGets(`${servers.peer.url}${blobPath}`, n, BIG)));
          const s = await peakRss(pids(), () => delta(hub!, () => parallelGets(`${servers.stevedore.url}${blobPath}`, n, BIG)));
          const rss = { peer: p.peaks.peer!, stevedore: s.peaks.stevedore! };
          rows.push({ scenario: `fan-in, ${n} cold pulls of ${mib(BIG)} MiB`, metric: 'wall time (s)', peer: secs(p.value.ms), stevedore: secs(s.value.ms), ratio: better(p.value.ms, s.value.ms), rss });
          rows.push({ scenario: `fan-in, ${n} cold pulls of ${mib(BIG)} MiB`, metric: 'upstream GETs of the layer', peer: p.value.counts.blobGet, stevedore: s.value.counts.blobGet, ratio: better(p.value.counts.blobGet, s.value.counts.blobGet), rss });
          rows.push({ scenario: `fan-in, ${n} cold pulls of ${mib(BIG)} MiB`, metric: 'upstream MiB', peer: mib(p.value.counts.bytesServed), stevedore: mib(s.value.counts.bytesServed), ratio: better(p.value.counts.bytesServed, s.value.counts.bytesServed), rss });
          if (n === 32) fanInFsPeak = s.peaks.stevedore!;
          rows.push({ scenario: `fan-in, ${n} cold pulls of ${mib(BIG)} MiB`, metric: 'peak RSS (MiB)', peer: p.peaks.peer!, stevedore: s.peaks.stevedore!, ratio: better(p.peaks.peer!, s.peaks.stevedore!), rss });
        }

        // 3. Warm blob throughput against the ceiling of nginx serving the file.
        // The fan-in left gigabytes of dirty pages: write them back first, so that
        // writeback does not eat into whichever server is measured next. Then the
        // best of three interleaved rounds, since one round on 2 shared cores is noisy.
        // Also Stevedore behind nginx, which sends verified blobs with sendfile (offload).
        log('warm throughput: filling a second Stevedore behind nginx (offload)');
        const blobPath = `/v2/library/big/blobs/${bigDigest}`;
        offloading = await startStevedore(hub.url, USER, PASSWORD, { offload: { header: 'X-Accel-Redirect', prefix: '/_stevedore/' } });
        front = await startNginxFront(offloading.url, offloading.dir);
        await parallelGets(`${front.url}${blobPath}`, 1, BIG);
        execFileSync('sync');
        for (const n of [1, 8]) {
          log(`warm throughput, ${n} stream(s)`);
          const best = { peer: Infinity, stevedore: Infinity, nginx: Infinity, offload: Infinity };
          const peaks = { peer: 0, stevedore: 0, offload: 0 };
          for (let round = 0; round < 3; round++) {
            const p = await peakRss(pids(), () => parallelGets(`${servers.peer.url}${blobPath}`, n, BIG));
            const s = await peakRss(pids(), () => parallelGets(`${servers.stevedore.url}${blobPath}`, n, BIG));
            best.peer = Math.min(best.peer, p.value);
            best.stevedore = Math.min(best.stevedore, s.value);
            best.nginx = Math.min(best.nginx, await parallelGets(`${nginx.url}/big.bin`, n, BIG));
            const o = await peakRss({ offload: offloading.pid }, () => parallelGets(`${front!.url}${blobPath}`, n, BIG));
            best.offload = Math.min(best.offload, o.value);
            peaks.peer = Math.max(peaks.peer, p.peaks.peer!);
            peaks.stevedore = Math.max(peaks.stevedore, s.peaks.stevedore!);
            peaks.offload = Math.max(peaks.offload, o.peaks.offload!);
          }
          const scenario = `warm blob, ${n} stream${n > 1 ? 's' : ''} (best of 3)`;
          const rss = { peer: peaks.peer, stevedore: peaks.stevedore };
          rows.push({ scenario, metric: 'GiB/s', peer: gibps(BIG * n, best.peer), stevedore: gibps(BIG * n, best.stevedore), ratio: better(best.peer, best.stevedore), reference: `nginx ${gibps(BIG * n, best.nginx)} GiB/s`, rss });
          // The offloading Stevedore's own RSS (nginx sends the bytes).
          rows.push({ scenario, metric: 'GiB/s, Stevedore behind nginx (offload)', peer: gibps(BIG * n, best.peer), stevedore: gibps(BIG * n, best.offload), ratio: better(best.peer, best.offload), reference: `nginx ${gibps(BIG * n, best.nginx)} GiB/s`, rss: { peer: peaks.peer, stevedore: peaks.offload } });
          rows.push({ scenario, metric: 'peak RSS (MiB)', peer: peaks.peer, stevedore: peaks.stevedore, ratio: better(peaks.peer, peaks.stevedore), rss });
        }

        // 6. The cache in an S3 bucket (Ceph RGW), beside distribution on its own S3 driver.
        await stevedore?.stop();
        await peer?.stop();
        const unavailable = await rgwUnavailableReason();
        if (unavailable) log(`S3 rows NOT RUN: ${unavailable}`);
        else rows.push(...(await s3Rows({ hub, user: USER, password: PASSWORD, bigDigest, bigBytes: BIG, coldFsMs, fanInFsPeak, log })));

        // 7. Three replicas on one bucket and one Redis, beside three distribution proxies on one bucket.
        if (await clusterUnavailable()) log(`cluster rows NOT RUN: ${await clusterUnavailable()}`);
        else rows.push(...(await clusterRows({ hub, user: USER, password: PASSWORD, bigDigest, bigBytes: BIG, log })));

        // 8. Restart as the cache grows: time to serve and RSS at 10k, 100k and 1M index entries.
        tables.push(restartTable(await restartRows(restartSizes(), log)));
      }
    }
  } finally {
    await front?.stop();
    await offloading?.stop();
    await stevedore?.stop();
    await peer?.stop();
    await nginx?.stop();
    await hub?.stop();
    await origin.stop();
    rmSync(nginxRoot, { recursive: true, force: true });
    cleanupScratch();
  }
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / GiB)} GiB RAM, Node ${process.version}`;
  const table = [
    '| scenario | metric | distribution proxy | Stevedore | Stevedore advantage | RSS peer / Stevedore (MiB) | reference |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.scenario} | ${r.metric} | ${r.peer} | ${r.stevedore} | ${r.ratio ?? ''} | ${rssCell(r.rss)} | ${r.reference ?? ''} |`),
  ].join('\n');
  process.stdout.write(`\n${machine}; big layer ${mib(BIG)} MiB; run took ${Math.round((Date.now() - started) / 1000)} s\n\n${table}\n${tables.join('\n')}\n`);
  mkdirSync('bench-results', { recursive: true });
  writeFileSync(`bench-results/bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, JSON.stringify({ machine, bigBytes: BIG, rows, tables }, null, 2));
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
