// Restart cost as the cache grows: a cache directory with N synthetic 1 KiB
// blobs (index rows and files), then `stevedore serve` started on it, with
// the index intact and with the index lost. For each: the time from spawn to
// the first 200 on /v2/, the RSS then, the time until the background
// reconcile logged its end, and the peak RSS (VmHWM) over the whole run.
// Usage: npm run build && tsx scripts/bench/restart.ts [N ...]   (default 0 10000 100000 1000000)
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { CacheDatabase } from '../../src/cache/database.js';
import { cliCommand } from '../../test/support/stevedore.js';
import { freePort } from '../../test/support/registry.js';

export interface RestartRow {
  entries: number;
  index: 'intact' | 'lost';
  /** Spawn to the first 200 on /v2/. */
  readyMs: number;
  rssAtReadyMiB: number;
  /** Spawn to the log line that ends reconciling (adopting, when the index was lost), seen within 20 ms. */
  reconciledMs: number | undefined;
  /** RSS when the reconcile had ended. */
  rssReconciledMiB: number;
  peakRssMiB: number;
  adopted: number | undefined;
}

const BLOB_BYTES = 1024;
const READY_WITHIN_MS = 600_000;

/** Fills `dir` with `entries` blobs as a cache would hold them: files under blobs/ and their rows in index.db. */
export async function makeCacheDir(dir: string, entries: number): Promise<void> {
  mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o700 });
  const database = new CacheDatabase(join(dir, 'index.db'), 0o600);
  const db = database.connection;
  const insert = db.prepare('INSERT INTO blobs (digest, size, media_type, created_at, last_access, hits) VALUES (?, ?, NULL, ?, ?, 0)');
  const now = Date.now();
  const shards = new Set<string>();
  const batch = 10_000;
  for (let start = 0; start < entries; start += batch) {
    const rows: { digest: string; bytes: Buffer; hex: string }[] = [];
    for (let i = start; i < Math.min(entries, start + batch); i++) {
      const bytes = Buffer.alloc(BLOB_BYTES, i % 251);
      bytes.write(`synthetic blob ${i}\n`);
      const hex = createHash('sha256').update(bytes).digest('hex');
      rows.push({ digest: `sha256:${hex}`, bytes, hex });
    }
    db.transaction(() => {
      for (const row of rows) insert.run(row.digest, BLOB_BYTES, now, now);
    })();
    // Synchronous writes: a fixture, made before anything is measured, and faster so.
    for (const row of rows) {
      const shard = join(dir, 'blobs', 'sha256', row.hex.slice(0, 2));
      if (!shards.has(shard)) {
        mkdirSync(shard, { recursive: true, mode: 0o700 });
        shards.add(shard);
      }
      writeFileSync(join(shard, row.hex), row.bytes, { mode: 0o600 });
    }
  }
  database.close();
}

function vm(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? 0) / 1024;
}

/** Starts `stevedore serve` on `dir` and measures it until the reconcile is over, then stops it. */
export async function measureRestart(dir: string, entries: number, index: 'intact' | 'lost'): Promise<RestartRow> {
  if (index === 'lost') for (const suffix of ['', '-wal', '-shm']) rmSync(join(dir, `index.db${suffix}`), { force: true });
  const work = mkdtempSync(join(tmpdir(), 'stevedore-restart-'));
  const port = await freePort();
  const configFile = join(work, 'mirror.yml');
  writeFileSync(
    configFile,
    stringify({
      listen: `127.0.0.1:${port}`,
      logLevel: 'info',
      cache: { dir },
      health: { probeInterval: '1h' },
      // Never contacted: nothing is pulled.
      upstreams: [{ registry: 'docker.io', endpoints: [{ url: 'http://127.0.0.1:9' }] }],
    }),
  );
  const logFile = join(work, 'stevedore.log');
  const out = openSync(logFile, 'a');
  const started = performance.now();
  const child = spawn(process.execPath, [...cliCommand(true), 'serve', '--config', configFile], { stdio: ['ignore', out, out] });
  closeSync(out);
  const pid = child.pid!;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    let readyMs: number | undefined;
    let rssAtReadyMiB = 0;
    while (readyMs === undefined && performance.now() - started < READY_WITHIN_MS) {
      if (child.exitCode !== null) throw new Error(`stevedore exited: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
      try {
        const res = await request(`http://127.0.0.1:${port}/v2/`);
        await res.body.dump();
        if (res.statusCode === 200) {
          readyMs = performance.now() - started;
          rssAtReadyMiB = vm(pid, 'VmRSS');
        }
      } catch {
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    if (readyMs === undefined) throw new Error('stevedore did not answer /v2/ in time');
    let reconciled: Record<string, unknown> | undefined;
    let reconciledMs: number | undefined;
    while (!reconciled && performance.now() - started < READY_WITHIN_MS) {
      const lines = readFileSync(logFile, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      // Before the reconcile ran in the background, 'cache recovered' carried its counts, before the server answered.
      const background = lines.find((l) => l.msg === 'cache reconciled');
      const before = lines.find((l) => l.msg === 'cache recovered' && 'adoptedFiles' in l);
      if (background || before) {
        reconciled = background ?? before;
        reconciledMs = background ? performance.now() - started : readyMs;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return { entries, index, readyMs, rssAtReadyMiB, reconciledMs, rssReconciledMiB: vm(pid, 'VmRSS'), peakRssMiB: vm(pid, 'VmHWM'), adopted: reconciled ? Number(reconciled.adoptedFiles ?? 0) : undefined };
  } finally {
    if (child.exitCode === null) process.kill(pid, 'SIGTERM');
    await exited;
    rmSync(work, { recursive: true, force: true });
  }
}

export async function restartRows(sizes: number[], log: (line: string) => void = (line) => console.error(line)): Promise<RestartRow[]> {
  const rows: RestartRow[] = [];
  for (const entries of sizes) {
    const dir = mkdtempSync(join(tmpdir(), `stevedore-restart-${entries}-`));
    try {
      const made = performance.now();
      await makeCacheDir(dir, entries);
      log(`restart: ${entries} entries made in ${((performance.now() - made) / 1000).toFixed(1)} s`);
      rows.push(await measureRestart(dir, entries, 'intact'));
      // Adopting hashes every file (about 5,000 a second here): past 100k that is minutes of a bench.
      if (entries <= lostIndexMax()) rows.push(await measureRestart(dir, entries, 'lost'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}

/** The rows as a markdown table, like the other tables of `npm run bench`. */
export function restartTable(rows: RestartRow[]): string {
  const secs = (ms: number | undefined): string => (ms === undefined ? '-' : (ms / 1000).toFixed(2));
  return [
    '',
    'Restart as the cache grows: synthetic 1 KiB blobs on the filesystem store; "lost" starts with index.db removed. Times from spawn.',
    '',
    '| index entries | index | serves /v2/ after (s) | RSS at that point (MiB) | reconciled after (s) | adopted | RSS after the pass (MiB) | peak RSS (MiB) |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.entries.toLocaleString('en')} | ${r.index} | ${secs(r.readyMs)} | ${r.rssAtReadyMiB.toFixed(0)} | ${secs(r.reconciledMs)} | ${r.adopted ?? '-'} | ${r.rssReconciledMiB.toFixed(0)} | ${r.peakRssMiB.toFixed(0)} |`,
    ),
  ].join('\n');
}

/** BENCH_RESTART_LOST_MAX: the largest cache also measured with its index lost (default 100,000). */
function lostIndexMax(): number {
  return Number(process.env.BENCH_RESTART_LOST_MAX ?? 100_000);
}

/** BENCH_RESTART_SIZES=10000,100000 picks the sizes; 1M entries take a few minutes to make and to adopt. */
export function restartSizes(): number[] {
  const given = process.env.BENCH_RESTART_SIZES;
  return given ? given.split(',').map(Number) : [0, 10_000, 100_000, 1_000_000];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (!existsSync(cliCommand(true)[0]!)) throw new Error('run npm run build first');
  const sizes = process.argv.slice(2).map(Number);
  console.log(restartTable(await restartRows(sizes.length > 0 ? sizes : restartSizes())));
}
