// Measures memory during a cold fan-in alone: one blob pushed to a
// docker-registry, then for each variant an empty Stevedore (after one
// unrelated pull) that N clients pull the blob from at once with curl, while
// /proc/<pid>/status is sampled: peak VmRSS and, at that peak, RssAnon and
// RssFile (Node's binary and libraries), with the V8 heap and external memory
// from /metrics.
// Usage: npm run build && tsx scripts/bench/fan-in-probe.ts [MiB] [clients] [variant...]
// A variant is `default`, `budget=<size>` (cache.memoryBudget),
// `cli=<path to another build's dist/cli.js>` (for the sizes before the budget)
// or `node=<flag>` (a flag for node, as `node=--max-semi-space-size=1`);
// several join with `+`, as `budget=8MiB+node=--max-semi-space-size=1`.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { freePort, startRegistry } from '../../test/support/registry.js';
import { pushBlob } from '../../test/support/seed.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 1024) * MiB;
const clients = Number(process.argv[3] ?? 32);
const variants = process.argv.slice(4).length > 0 ? process.argv.slice(4) : ['default'];
const ownCli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

interface Status {
  rss: number;
  anon: number;
  file: number;
  shmem: number;
}

function status(pid: number): Status | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? 0) / 1024;
    return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem') };
  } catch {
    return undefined;
  }
}

/** nodejs_heap_size_used_bytes, nodejs_heap_size_total_bytes and nodejs_external_memory_bytes, in MiB. */
async function v8Memory(url: string): Promise<{ heap: number; heapTotal: number; external: number } | undefined> {
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    const value = (name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN) / MiB;
    return { heap: value('nodejs_heap_size_used_bytes'), heapTotal: value('nodejs_heap_size_total_bytes'), external: value('nodejs_external_memory_bytes') };
  } catch {
    return undefined;
  }
}

async function serve(cli: string, nodeFlags: string[], registryUrl: string, budget: string | undefined): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const work = mkdtempSync(join(tmpdir(), 'fan-in-probe-'));
  const port = await freePort();
  const config = {
    listen: `127.0.0.1:${port}`,
    logLevel: 'warn',
    cache: { dir: join(work, 'data'), ...(budget ? { memoryBudget: budget } : {}) },
    health: { probeInterval: '1h' },
    upstreams: [{ registry: 'docker.io', endpoints: [{ url: registryUrl }], timeouts: { body: '300s' } }],
  };
  writeFileSync(join(work, 'mirror.yml'), stringify(config));
  const child = spawn(process.execPath, [...nodeFlags, cli, 'serve', '--config', join(work, 'mirror.yml')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if ((await fetch(`${url}/v2/`).then((r) => r.status).catch(() => 0)) === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      rmSync(work, { recursive: true, force: true });
    },
  };
}

const registry = await startRegistry();
try {
  const blob = await pushBlob(registry.url, 'library/big', { size, seed: 'fan-in-probe' });
  const small = await pushBlob(registry.url, 'library/small', Buffer.from('an unrelated blob, pulled first'));
  for (const variant of variants) {
    const parts = variant.split('+');
    const option = (name: string): string[] => parts.filter((p) => p.startsWith(`${name}=`)).map((p) => p.slice(name.length + 1));
    const cli = option('cli')[0] ?? ownCli;
    const budget = option('budget')[0];
    execFileSync('sync'); // the last variant's dirty pages are not this one's work
    const mirror = await serve(cli, option('node'), registry.url, budget);
    try {
      await fetch(`${mirror.url}/v2/library/small/blobs/${small.digest}`).then((r) => r.arrayBuffer());
      const idle = status(mirror.pid)!;
      let peak: Status = idle;
      let maxAnon = 0;
      const sample = (): void => {
        const now = status(mirror.pid);
        if (!now) return;
        if (now.rss > peak.rss) peak = now;
        maxAnon = Math.max(maxAnon, now.anon);
      };
      const timer = setInterval(sample, 100);
      let v8 = { heap: 0, heapTotal: 0, external: 0 };
      const v8Timer = setInterval(() => {
        void v8Memory(mirror.url).then((m) => {
          if (m) v8 = { heap: Math.max(v8.heap, m.heap), heapTotal: Math.max(v8.heapTotal, m.heapTotal), external: Math.max(v8.external, m.external) };
        });
      }, 1000);
      const started = performance.now();
      const url = `${mirror.url}/v2/library/big/blobs/${blob.digest}`;
      try {
        await Promise.all(
          Array.from({ length: clients }, async () => {
            const { stdout } = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], { timeout: 600_000 });
            if (stdout.trim() !== `200 ${size}`) throw new Error(`${url}: ${stdout}`);
          }),
        );
      } finally {
        clearInterval(timer);
        clearInterval(v8Timer);
      }
      sample();
      const wall = (performance.now() - started) / 1000;
      const f = (n: number): string => n.toFixed(0);
      console.log(
        `${variant}: ${clients} cold pulls of ${size / MiB} MiB in ${wall.toFixed(1)} s: peak RSS ${f(peak.rss)} MiB (anon ${f(peak.anon)}, file ${f(peak.file)}, shmem ${f(peak.shmem)}); ` +
          `max anon ${f(maxAnon)}; idle before ${f(idle.rss)} (anon ${f(idle.anon)}, file ${f(idle.file)}); V8 heap used ≤ ${f(v8.heap)} (total ≤ ${f(v8.heapTotal)}), external ≤ ${f(v8.external)} MiB`,
      );
    } finally {
      await mirror.stop();
    }
  }
} finally {
  await registry.stop();
}
