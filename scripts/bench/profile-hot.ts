// Profiles Stevedore's hot paths with --cpu-prof: manifest GET by tag and small
// blob GET at 64 connections, then prints the functions with the most self time.
// Usage: npm run build && tsx scripts/bench/profile-hot.ts [seconds]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { freePort, startRegistry } from '../../test/support/registry.js';
import { pushImage } from '../../test/support/seed.js';
import { startMirrorProcess } from '../../test/support/stevedore.js';

interface ProfileNode {
  id: number;
  children?: number[];
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
}

const seconds = Number(process.argv[2] ?? 8);
const profiles = mkdtempSync(join(tmpdir(), 'stevedore-prof-'));
const registry = await startRegistry();
const image = await pushImage(registry.url, 'library/hot', 'v1', { format: 'oci', layers: [4096] });
const mirror = await startMirrorProcess({
  port: await freePort(),
  compiled: true,
  nodeArgs: process.env.PROFILE_OFF ? [] : ['--cpu-prof', `--cpu-prof-dir=${profiles}`],
  extra: process.env.PROFILE_LOGLEVEL ? { logLevel: process.env.PROFILE_LOGLEVEL } : undefined,
  upstreams: [{ registry: 'docker.io', url: registry.url }],
  cache: { tagTtl: '1h' },
});
try {
  const headers = { accept: image.manifestMediaType };
  const manifest = `${mirror.url}/v2/library/hot/manifests/v1`;
  await fetch(manifest, { headers });
  await fetch(`${mirror.url}/v2/library/hot/blobs/${image.layers[0]!.digest}`);
  for (const [name, url, method] of [
    ['manifest GET by tag', manifest, 'GET'],
    ['small blob GET', `${mirror.url}/v2/library/hot/blobs/${image.layers[0]!.digest}`, 'GET'],
  ] as const) {
    const result = await autocannon({ url, method, headers, connections: 64, duration: seconds });
    console.log(`${name}: ${Math.round(result.requests.average)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, errors ${result.errors + result.non2xx}`);
  }
} finally {
  await mirror.stop();
  await registry.stop();
}
const file = readdirSync(profiles).find((f) => f.endsWith('.cpuprofile'));
if (file) {
  const profile = JSON.parse(readFileSync(join(profiles, file), 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  for (const id of profile.samples) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    const where = frame.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/').replace(/^node:/, '');
    const key = `${frame.functionName || '(anonymous)'} ${where}:${frame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  const total = profile.samples.length;
  // PROFILE_CALLERS=name prints the call chains that lead to that function.
  const wanted = process.env.PROFILE_CALLERS;
  if (wanted) {
    const parent = new Map<number, number>();
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const chains = new Map<string, number>();
    for (const id of profile.samples) {
      if (byId.get(id)?.callFrame.functionName !== wanted) continue;
      const chain: string[] = [];
      for (let at = parent.get(id); at !== undefined && chain.length < 8; at = parent.get(at)) {
        const f = byId.get(at)!.callFrame;
        chain.push(`${f.functionName || '(anonymous)'}@${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`);
      }
      chains.set(chain.join(' < '), (chains.get(chain.join(' < ')) ?? 0) + 1);
    }
    for (const [chain, n] of [...chains].sort((a, b) => b[1] - a[1]).slice(0, 5)) console.log(`${n}× ${wanted} < ${chain}`);
  }
  console.log(`\nself time, top 30 of ${total} samples:`);
  for (const [key, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${((100 * n) / total).toFixed(1).padStart(5)}%  ${key}`);
}
rmSync(profiles, { recursive: true, force: true });
