// npm run bench: the core figures of a pull-through mirror, measured on this
// machine against a real docker-registry on 127.0.0.1. Prints a markdown table
// and writes JSON to bench-results/. Nothing here is asserted; it is measured.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { Agent, request } from 'undici';
import { freePort, startRegistry } from '../../test/support/registry.js';
import { pushBlob } from '../../test/support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../../test/support/stevedore.js';
import { streamDigest } from '../../test/support/http.js';

const GiB = 1024 ** 3;
const SIZE = Number(process.env.BENCH_BLOB_BYTES ?? GiB);
const rows: { scenario: string; value: string; detail: string }[] = [];
const results: Record<string, unknown> = {};

/** Peak resident set size of a process, from the kernel's high-water mark. */
function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await work();
  return { ms: performance.now() - started, value };
}

/** Streams a body to nowhere, counting bytes: the client does as little as it can. */
async function drain(url: string, dispatcher: Agent): Promise<{ status: number; bytes: number }> {
  const res = await request(url, { dispatcher });
  let bytes = 0;
  for await (const chunk of res.body) bytes += (chunk as Buffer).length;
  return { status: res.statusCode, bytes };
}

/** n parallel GETs; cold runs hash every body to prove it, warm runs only count bytes. */
async function parallel(url: string, n: number, digest: string, verify: boolean): Promise<number> {
  const dispatcher = new Agent({ connections: n });
  if (verify) {
    const { ms, value } = await timed(() => Promise.all(Array.from({ length: n }, () => streamDigest(url, {}, dispatcher))));
    for (const r of value) if (r.digest !== digest || r.status !== 200) throw new Error(`bad body from ${url}: ${r.status} ${r.digest}`);
    await dispatcher.close();
    return ms;
  }
  const { ms, value } = await timed(() => Promise.all(Array.from({ length: n }, () => drain(url, dispatcher))));
  for (const r of value) if (r.bytes !== SIZE || r.status !== 200) throw new Error(`short body from ${url}: ${r.status} ${r.bytes}`);
  await dispatcher.close();
  return ms;
}

const gibPerSecond = (bytes: number, ms: number): string => (bytes / GiB / (ms / 1000)).toFixed(2);

async function main(): Promise<void> {
  const registry = await startRegistry();
  const mirrors: MirrorProcess[] = [];
  try {
    process.stderr.write(`seeding a ${SIZE} byte blob…\n`);
    const blob = await pushBlob(registry.url, 'bench/big', { size: SIZE, seed: 'bench-big' });
    const upstreams = [{ registry: 'docker.io', url: registry.url, timeouts: { body: '120s' } }];
    const path = `/v2/bench/big/blobs/${blob.digest}`;

    const direct = await parallel(`${registry.url}${path}`, 1, blob.digest, true);
    rows.push({ scenario: 'direct GET from the upstream (cold lower bound)', value: `${(direct / 1000).toFixed(2)} s`, detail: `${gibPerSecond(SIZE, direct)} GiB/s` });

    const mirror = await startMirrorProcess({ port: await freePort(), upstreams });
    mirrors.push(mirror);
    const cold = await parallel(`${mirror.url}${path}`, 1, blob.digest, true);
    rows.push({ scenario: 'cold GET through Stevedore', value: `${(cold / 1000).toFixed(2)} s`, detail: `${(cold / direct).toFixed(2)}× the direct GET` });

    for (const n of [1, 8]) {
      const warm = await parallel(`${mirror.url}${path}`, n, blob.digest, false);
      rows.push({ scenario: `warm GET, ${n} parallel stream${n > 1 ? 's' : ''}`, value: `${gibPerSecond(SIZE * n, warm)} GiB/s`, detail: `${(warm / 1000).toFixed(2)} s for ${n} × ${(SIZE / GiB).toFixed(2)} GiB` });
    }
    rows.push({ scenario: 'peak RSS of Stevedore after the scenarios above', value: `${peakRssMiB(mirror.pid)} MiB`, detail: '' });

    const fanIn = await startMirrorProcess({ port: await freePort(), upstreams });
    mirrors.push(fanIn);
    const rssBefore = peakRssMiB(fanIn.pid);
    const sixteen = await parallel(`${fanIn.url}${path}`, 16, blob.digest, false);
    rows.push({ scenario: '16 concurrent cold GETs, fresh cache', value: `${(sixteen / 1000).toFixed(2)} s`, detail: `${(sixteen / cold).toFixed(2)}× one cold GET` });
    rows.push({ scenario: 'peak RSS during 16 concurrent cold GETs', value: `${peakRssMiB(fanIn.pid)} MiB`, detail: `${rssBefore} MiB after start-up` });
    const fills = fanIn.logs().split('\n').filter((l) => l.includes('"blob cached"')).length;
    rows.push({ scenario: 'upstream fills for those 16 GETs', value: String(fills), detail: 'one fill is one upstream GET' });
  } finally {
    for (const m of mirrors) await m.stop();
    await registry.stop();
  }
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / GiB)} GiB RAM, Node ${process.version}`;
  const table = ['| scenario | result | detail |', '|---|---|---|', ...rows.map((r) => `| ${r.scenario} | ${r.value} | ${r.detail} |`)].join('\n');
  process.stdout.write(`\nBlob of ${(SIZE / GiB).toFixed(2)} GiB on ${machine}\n\n${table}\n`);
  mkdirSync('bench-results', { recursive: true });
  results.machine = machine;
  results.rows = rows;
  writeFileSync(`bench-results/core-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, JSON.stringify(results, null, 2));
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
