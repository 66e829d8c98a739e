// Measures a cold blob alone: one blob through an empty Stevedore with curl to
// /dev/null, against curl straight from the registry, and prints where the
// mirror's CPU went (--cpu-prof).
// Usage: npm run build && tsx scripts/bench/cold-blob-probe.ts [MiB] [rounds]
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, startRegistry } from '../../test/support/registry.js';
import { pushBlob } from '../../test/support/seed.js';
import { startMirrorProcess } from '../../test/support/stevedore.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 1024) * MiB;
const rounds = Number(process.argv[3] ?? 3);
const registry = await startRegistry();
const blob = await pushBlob(registry.url, 'library/big', { size, seed: 'cold-probe' });
const curl = async (url: string): Promise<number> => {
  const started = performance.now();
  await run('curl', ['-sS', '-o', '/dev/null', '--fail', url], { maxBuffer: 1 << 20 });
  return performance.now() - started;
};
const direct: number[] = [];
const mirrored: number[] = [];
const profiles = mkdtempSync(join(tmpdir(), 'cold-prof-'));
try {
  for (let round = 0; round < rounds; round++) {
    direct.push(await curl(`${registry.url}/v2/library/big/blobs/${blob.digest}`));
    const profiled = round === rounds - 1 && !process.env.PROBE_NO_PROFILE;
    const mirror = await startMirrorProcess({ port: await freePort(), compiled: true, nodeArgs: profiled ? ['--cpu-prof', `--cpu-prof-dir=${profiles}`] : [], upstreams: [{ registry: 'docker.io', url: registry.url, timeouts: { body: '300s' } }] });
    try {
      await curl(`${mirror.url}/v2/`);
      mirrored.push(await curl(`${mirror.url}/v2/library/big/blobs/${blob.digest}`));
    } finally {
      await mirror.stop();
    }
  }
} finally {
  await registry.stop();
}
const mibps = (ms: number): string => ((size / MiB) / (ms / 1000)).toFixed(0);
console.log(`direct: ${direct.map((ms) => `${mibps(ms)} MiB/s`).join(', ')}; Stevedore cold: ${mirrored.map((ms) => `${mibps(ms)} MiB/s`).join(', ')}`);
const file = readdirSync(profiles).find((f) => f.endsWith('.cpuprofile'));
if (file) {
  const profile = JSON.parse(readFileSync(join(profiles, file), 'utf8')) as { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]; samples: number[] };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  for (const id of profile.samples) {
    const f = byId.get(id)?.callFrame;
    if (!f) continue;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/').replace(/^node:/, '')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  const total = profile.samples.length;
  for (const [key, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${((100 * n) / total).toFixed(1).padStart(5)}%  ${key}`);
}
rmSync(profiles, { recursive: true, force: true });
