// Load, and faults under load, against a Stevedore child process in front of
// the Docker Hub double and a real docker-registry. 200 clients pull a mix of
// ~200 small and 3 large images; then, each while 100 clients pull, the
// upstream registry is killed and restarted, the token endpoint fails, and
// Stevedore itself is killed -9 and restarted on the same cache. Every pull
// either verifies, or fails cleanly (error JSON, a broken connection) and
// succeeds on retry; the cache verifies clean and no descriptor leaks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, startRegistry } from '../support/registry.js';
import { restartable, type RestartableRegistry } from '../support/registry-restart.js';
import { startHubDouble, type HubDouble, type HubStats } from '../support/hub-double.js';
import { runCli, startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { seedLargeImage, seedSmallImages, type SeededImage } from '../support/load-seed.js';
import { failuresByKind, mixPicker, retryFailed, runLoad, uncleanFailures, type LoadReport, type PullRecord, type RetryReport } from '../support/load-driver.js';
import { cpuSeconds, fdSummary, openFds, peakRssMiB, waitForFds } from '../support/proc-stats.js';

const MiB = 1024 * 1024;
const LOAD_CLIENTS = 200;
const LOAD_MS = 25_000;
const FAULT_CLIENTS = 100;
const MAX_RSS_MIB = 400;
/** Descriptors above the baseline tolerated once clients are gone (a late keep-alive socket or two). */
const FD_SLACK = 4;
/** Slows upstream blob bodies during faults, so a 64 MiB fill takes ~4 s and is surely in flight. */
const FAULT_THROTTLE = 16 * MiB;

let registry: RestartableRegistry | undefined;
let hub: HubDouble | undefined;
let mirror: MirrorProcess | undefined;
const mirrors: MirrorProcess[] = [];
let port = 0;
let baselineFds = 0;
const cacheDir = mkdtempSync(join(tmpdir(), 'stevedore-load-'));
const mix = { small: [] as SeededImage[], large: [] as SeededImage[] };
const cold = { a: [] as SeededImage[], aLarge: [] as SeededImage[], b: [] as SeededImage[], c: [] as SeededImage[], cLarge: [] as SeededImage[] };
const rows: string[][] = [];
const notes: string[] = [];

async function startMirror(): Promise<MirrorProcess> {
  const m = await startMirrorProcess({
    port,
    dir: cacheDir,
    upstreams: [{ registry: 'docker.io', url: hub!.url }],
    // Short circuit-breaker windows keep recovery within the test's bounds; the defaults only make retries wait longer.
    health: { probeInterval: '2s', openMin: '1s', openMax: '4s' },
  });
  mirrors.push(m);
  return m;
}

/** Upstream blob GETs per digest: all of them, and those that returned content (200/206). */
function upstreamBlobGets(stats: HubStats): { all: Map<string, number>; content: Map<string, number> } {
  const all = new Map<string, number>();
  const content = new Map<string, number>();
  for (const r of stats.requests) {
    const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(r.path)?.[1];
    if (r.kind !== 'blobGet' || !digest) continue;
    all.set(digest, (all.get(digest) ?? 0) + 1);
    if (r.status === 200 || r.status === 206) content.set(digest, (content.get(digest) ?? 0) + 1);
  }
  return { all, content };
}

const layerOf = (image: SeededImage): string => image.blobs.at(-1)!.digest;
const secs = (ms: number): string => (ms / 1000).toFixed(1);

async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** Waits until the upstream is sending each of these large layers, then a second more: the fills are mid-blob. */
async function largeFillsInFlight(images: SeededImage[]): Promise<void> {
  await waitUntil('the large fills to start upstream', () => {
    const { content } = upstreamBlobGets(hub!.stats());
    return images.every((i) => content.has(layerOf(i)));
  }, 15_000);
  await sleep(1_000);
}

/** Runs a fault while a load runs; waits for both, then rethrows the fault's error, if any. */
async function during(load: Promise<LoadReport>, fault: () => Promise<void>): Promise<LoadReport> {
  const failed = await fault().then(() => undefined, (err: unknown) => err ?? new Error('the fault step failed'));
  const report = await load;
  if (failed !== undefined) throw failed;
  return report;
}

/** `stevedore verify` on the cache directory (it opens the index read-only, beside a server or without one). */
async function verifyClean(configFile: string, label: string): Promise<string> {
  const started = Date.now();
  const res = await runCli(['verify', '--config', configFile]);
  const m = /checked (\d+) blobs \(([^)]+)\): (\d+) damaged/.exec(res.stdout);
  assert.equal(res.code, 0, `${label}: verify exited ${res.code}\n${res.stdout}\n${res.stderr}`);
  assert.ok(m, `${label}: unexpected verify output\n${res.stdout}`);
  assert.equal(m[3], '0', `${label}: verify found damage\n${res.stdout}`);
  return `${m[1]} blobs (${m[2]}) 0 damaged in ${secs(Date.now() - started)} s`;
}

/** Retries the failures, timed. */
async function retried(m: MirrorProcess, report: LoadReport): Promise<RetryReport & { ms: number }> {
  const started = Date.now();
  const retry = await retryFailed(m.url, report.failed);
  return { ...retry, ms: Date.now() - started };
}

/** Once clients are gone, the mirror's descriptors return to the baseline taken before the first load. */
async function fdsSettle(m: MirrorProcess, label: string): Promise<string> {
  const started = Date.now();
  const fds = await waitForFds(m.pid, baselineFds + FD_SLACK, 20_000);
  assert.ok(fds <= baselineFds + FD_SLACK, `${label}: ${fds} fds, baseline ${baselineFds}: ${JSON.stringify(fdSummary(m.pid))}`);
  return `fds ${baselineFds} → ${fds} (${secs(Date.now() - started)} s)`;
}

const describeFailures = (records: PullRecord[]): string =>
  records.slice(0, 8).map((r) => `${r.image.name} (${r.form}): ${r.failure?.kind} ${r.failure?.message}`).join('\n');

/** Clean failures only, every one recovered on retry, and no cached image failed while only the upstream was at fault. */
function assertNothingLost(label: string, report: LoadReport, retry: RetryReport, warm?: Set<string>): void {
  assert.deepEqual(uncleanFailures(report.failed).map((r) => r.failure), [], `${label}: failures that were not clean\n${describeFailures(uncleanFailures(report.failed))}`);
  assert.deepEqual(retry.unclean.map((r) => r.failure), [], `${label}: retries that failed uncleanly\n${describeFailures(retry.unclean)}`);
  assert.equal(retry.lost.length, 0, `${label}: pulls lost\n${describeFailures(retry.lost)}`);
  if (warm) {
    const warmFailed = report.failed.filter((r) => warm.has(r.image.name));
    assert.equal(warmFailed.length, 0, `${label}: cached images failed while only the upstream was at fault\n${describeFailures(warmFailed)}`);
  }
}

function row(phase: string, clients: number, report: LoadReport, retry: (RetryReport & { ms: number }) | undefined, faults: string): void {
  const kinds = Object.entries(failuresByKind(report.failed)).map(([k, n]) => `${n} ${k}`).join(', ');
  rows.push([
    phase, String(clients), secs(report.durationMs), String(report.pulls), String(report.largePulls),
    `${report.failed.length}${kinds ? ` (${kinds})` : ''}`, retry ? `${retry.retried} (${retry.attempts} attempts, ${secs(retry.ms)} s)` : '0',
    String(retry?.recovered ?? 0), String(retry?.lost.length ?? report.failed.length), faults, (report.bytes / MiB).toFixed(0), `${report.p50Ms} / ${report.p99Ms}`,
  ]);
}

before(async () => {
  const started = Date.now();
  registry = restartable(await startRegistry());
  const url = registry.url;
  const large = (name: string, mib: number): Promise<SeededImage> => seedLargeImage(url, name, mib * MiB);
  [mix.small, mix.large, cold.a, cold.aLarge, cold.b, cold.c, cold.cLarge] = await Promise.all([
    seedSmallImages(url, { prefix: 'load', count: 200 }),
    Promise.all([large('large-64', 64), large('large-96', 96), large('large-128', 128)]),
    seedSmallImages(url, { prefix: 'upkill', count: 40, sharedLayers: 4 }),
    Promise.all([large('upkill-large', 64)]),
    seedSmallImages(url, { prefix: 'token', count: 40, sharedLayers: 4 }),
    seedSmallImages(url, { prefix: 'crash', count: 30, sharedLayers: 4 }),
    Promise.all([large('crash-large-a', 64), large('crash-large-b', 64)]),
  ]);
  hub = await startHubDouble({ upstream: url, rateLimit: 10_000_000 });
  port = await freePort();
  mirror = await startMirror();
  baselineFds = openFds(mirror.pid);
  const smallBytes = mix.small.reduce((n, i) => n + i.pullBytes, 0);
  notes.push(`seeding: ${mix.small.length} small images (${(smallBytes / MiB).toFixed(1)} MiB, ${mix.small.filter((i) => i.kind === 'index').length} of them indexes), 3 large (64/96/128 MiB), cold sets for the faults (110 small, 3 × 64 MiB): ${secs(Date.now() - started)} s`);
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(cacheDir, { recursive: true, force: true });
  const header = ['phase', 'clients', 's', 'pulls', 'large pulls', 'failed', 'retried', 'recovered', 'lost', 'faults injected', 'MiB verified', 'p50 / p99 ms'];
  const table = [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
  console.log(`\n${table}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`);
});

test(`load: ${LOAD_CLIENTS} clients for ${LOAD_MS / 1000} s; every pull verifies, each blob is fetched upstream once, memory and fds stay bounded`, { timeout: 120_000 }, async () => {
  const m = mirror!;
  hub!.resetStats();
  const cpuBefore = cpuSeconds(m.pid);
  const report = await runLoad({ mirrorUrl: m.url, clients: LOAD_CLIENTS, durationMs: LOAD_MS, pick: mixPicker({ small: mix.small, large: mix.large, minLarge: 1, maxLarge: 3, pLarge: 0.01 }) });
  const cpu = cpuSeconds(m.pid) - cpuBefore;
  const peak = peakRssMiB(m.pid);
  const stats = hub!.stats();
  const gets = upstreamBlobGets(stats);
  const maxGets = Math.max(0, ...gets.all.values());
  const allBlobs = new Set([...mix.small, ...mix.large].flatMap((i) => i.blobs.map((b) => b.digest)));
  row('load', LOAD_CLIENTS, report, undefined, '0');
  notes.push(`load: ${report.pulls} pulls (${(report.pulls / (report.durationMs / 1000)).toFixed(0)}/s; slowest ${report.slowest.map((s) => `${s.image} ${secs(s.ms)} s`).join(', ')}), ${report.blobsVerified} blobs and ${report.manifestsVerified} manifests verified, ${report.pulledImages.size}/${mix.small.length + mix.large.length} images pulled; upstream ${stats.blobGet} blob GETs for ${allBlobs.size} distinct blobs (max ${maxGets} per digest), ${stats.manifestGet} manifest GETs, ${stats.tokens} tokens; mirror CPU ${cpu.toFixed(1)} s, peak RSS (VmHWM) ${peak.toFixed(0)} MiB`);

  assert.equal(report.failed.length, 0, `failed pulls under load: ${JSON.stringify(failuresByKind(report.failed))}\n${describeFailures(report.failed)}`);
  assert.equal(report.pulledImages.size, mix.small.length + mix.large.length, 'every image was pulled at least once');
  assert.ok(maxGets <= 1, `a blob was fetched upstream more than once: ${[...gets.all].filter(([, n]) => n > 1).slice(0, 5).join('; ')}`);
  assert.deepEqual([...allBlobs].filter((d) => !gets.content.has(d)), [], 'every blob came from upstream exactly once');
  assert.ok(peak < MAX_RSS_MIB, `peak RSS ${peak.toFixed(0)} MiB, bound ${MAX_RSS_MIB} MiB`);
  // The client pools are closed by now; the mirror's upstream keep-alive sockets close within seconds.
  notes.push(`after load: ${await fdsSettle(m, 'after the load')}`);
});

test(`the upstream registry killed (SIGKILL) and restarted under ${FAULT_CLIENTS} clients`, { timeout: 120_000 }, async () => {
  const m = mirror!;
  const warm = new Set(mix.small.map((i) => i.name));
  hub!.resetStats();
  hub!.throttle(FAULT_THROTTLE);
  const load = runLoad({ mirrorUrl: m.url, clients: FAULT_CLIENTS, durationMs: 14_000, seed: 2, pick: mixPicker({ small: mix.small, cold: cold.a, large: cold.aLarge, minLarge: 2, maxLarge: 4, pLarge: 0.05 }) });
  let downMs = 0;
  let report: LoadReport;
  try {
    report = await during(load, async () => {
      await largeFillsInFlight(cold.aLarge);
      const killedAt = Date.now();
      await registry!.kill();
      await sleep(3_000);
      await registry!.restart();
      downMs = Date.now() - killedAt;
    });
  } finally {
    hub!.throttle(null);
  }
  const stats = hub!.stats();
  const upstream502 = stats.requests.filter((r) => r.status === 502).length;
  const largeGets = upstreamBlobGets(stats);
  const largeLayer = layerOf(cold.aLarge[0]!);
  const retry = await retried(m, report);
  const verified = await verifyClean(m.configFile, 'after the upstream kill');
  const broke = m.logs().split('\n').some((l) => l.includes(largeLayer) && /blob fill failed|stream broke/.test(l));
  row('upstream registry kill -9, restart', FAULT_CLIENTS, report, retry, `1 kill, down ${secs(downMs)} s (${upstream502} upstream 502s)`);
  notes.push(`upstream kill: the large layer went upstream ${largeGets.content.get(largeLayer) ?? 0} times with content (${largeGets.all.get(largeLayer) ?? 0} GETs in all, the Range resume that met the dead registry included); verify ${verified}; ${await fdsSettle(m, 'after the upstream kill')}`);

  assert.ok(report.failed.length > 0, 'the kill made some cold pulls fail (else the fault did not bite)');
  assert.ok(broke, 'the large fill in flight was cut by the kill');
  assertNothingLost('upstream kill', report, retry, warm);
});

test(`the token endpoint failing for 6 s under ${FAULT_CLIENTS} clients pulling cold content`, { timeout: 120_000 }, async () => {
  const m = mirror!;
  const warm = new Set([...mix.small, ...cold.a].map((i) => i.name));
  hub!.resetStats();
  let coldOn = false;
  const load = runLoad({ mirrorUrl: m.url, clients: FAULT_CLIENTS, durationMs: 14_000, seed: 3, pick: mixPicker({ small: [...mix.small, ...cold.a], cold: cold.b, coldOn: () => coldOn }) });
  const report = await during(load, async () => {
    await sleep(2_000);
    try {
      // Cold repositories enter the mix only once no token can be had.
      hub!.failNext(1_000_000, 503, {}, 'token');
      coldOn = true;
      await sleep(6_000);
    } finally {
      hub!.clearFaults();
    }
  });
  const tokenFailures = hub!.stats().requests.filter((r) => r.kind === 'token' && r.status === 503).length;
  const retry = await retried(m, report);
  const verified = await verifyClean(m.configFile, 'after the token outage');
  const answers = [...new Set(report.failed.map((r) => `${r.failure?.status} ${r.failure?.code}`))];
  row('token endpoint 503 for 6 s', FAULT_CLIENTS, report, retry, `${tokenFailures} token requests failed`);
  notes.push(`token outage: clients got ${answers.join(', ') || 'nothing'}; verify ${verified}; ${await fdsSettle(m, 'after the token outage')}`);

  assert.ok(tokenFailures > 0, 'the token endpoint was asked during the outage');
  assert.ok(report.failed.length > 0, 'cold pulls failed during the outage (else the fault did not bite)');
  assert.deepEqual(report.failed.filter((r) => r.failure?.kind !== 'http'), [], 'a token outage gives error JSON, never a broken transfer');
  assertNothingLost('token outage', report, retry, warm);
});

test(`kill -9 of Stevedore with cold large blobs in flight under ${FAULT_CLIENTS} clients, then a restart on the same cache`, { timeout: 150_000 }, async () => {
  hub!.resetStats();
  hub!.throttle(FAULT_THROTTLE);
  const load = runLoad({ mirrorUrl: mirror!.url, clients: FAULT_CLIENTS, durationMs: 16_000, seed: 4, pick: mixPicker({ small: [...mix.small, ...cold.b], cold: cold.c, large: cold.cLarge, minLarge: 3, maxLarge: 6, pLarge: 0.1 }) });
  let partials = 0;
  let crashedVerify = '';
  let recovery: Record<string, unknown> | undefined;
  let downMs = 0;
  let report: LoadReport;
  try {
    report = await during(load, async () => {
      await largeFillsInFlight(cold.cLarge);
      const crashed = mirror!;
      const killedAt = Date.now();
      await crashed.crash();
      partials = readdirSync(join(cacheDir, 'tmp')).length;
      // The cache exactly as the crash left it: the index may name only complete, verified blobs.
      crashedVerify = await verifyClean(crashed.configFile, 'right after kill -9');
      mirror = await startMirror();
      downMs = Date.now() - killedAt;
      const lines = mirror.logs().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
      // The background reconcile may not have logged yet: its counts are noted when it has.
      const found = { ...lines.find((l) => l.msg === 'cache reconciled'), ...lines.find((l) => l.msg === 'cache recovered') };
      if (found.msg) recovery = Object.fromEntries(['sweptTempFiles', 'droppedEntries', 'adoptedFiles', 'removedFiles'].map((k) => [k, found[k]]));
    });
  } finally {
    hub!.throttle(null);
  }
  const restarted = mirror!;
  const retry = await retried(restarted, report);
  const verified = await verifyClean(restarted.configFile, 'after the restart and retries');
  const { content } = upstreamBlobGets(hub!.stats());
  const largeFailures = report.failed.filter((r) => r.image.large && r.failure?.kind === 'connection').length;
  const peak = peakRssMiB(restarted.pid);
  row('Stevedore kill -9, restart on the same cache', FAULT_CLIENTS, report, retry, `1 SIGKILL, down ${secs(downMs)} s (incl. verify)`);
  notes.push(`Stevedore kill -9: ${partials} partial fills left in tmp/, recovery ${JSON.stringify(recovery)}; upstream GETs of the large layers ${cold.cLarge.map((i) => content.get(layerOf(i)) ?? 0).join(' / ')}; verify right after the crash ${crashedVerify}; after retries ${verified}; restarted process peak RSS ${peak.toFixed(0)} MiB; ${await fdsSettle(restarted, 'after the restart')}`);

  assert.ok(partials >= 1, 'the kill caught fills in flight (partial temp files)');
  assert.ok(largeFailures >= 1, 'the kill cut large pulls in flight');
  assert.ok(recovery, 'the restarted mirror logged its recovery');
  assert.ok(Number(recovery.sweptTempFiles) >= partials, 'the partial fills were swept at start-up');
  assert.ok(Math.max(0, ...content.values()) <= 2, 'at most one upstream fetch per blob before the kill and one after');
  assert.ok(peak < MAX_RSS_MIB, `restarted process peak RSS ${peak.toFixed(0)} MiB, bound ${MAX_RSS_MIB} MiB`);
  assertNothingLost('Stevedore kill -9', report, retry);
});
