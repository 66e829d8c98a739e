// Profiles Stevedore's hot paths with --cpu-prof: manifest GET by tag and small
// blob GET at 64 connections, then prints the functions with the most self time.
// Usage: npm run build && tsx scripts/bench/profile-hot.ts [seconds]
// PROFILE_NOTIFY=1 adds a notification endpoint (a receiver answering 200) and
// prints what recording and delivering the events cost per request;
// PROFILE_NOTIFY=no-hits sets the endpoint's ignore.hits.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
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
  /** Microseconds. */
  startTime: number;
  endTime: number;
}

const seconds = Number(process.argv[2] ?? 8);
const profiles = mkdtempSync(join(tmpdir(), 'stevedore-prof-'));
// The receiver runs in this process: its cost is not in the mirror's profile.
let receivedEvents = 0;
const receiver = process.env.PROFILE_NOTIFY
  ? createServer((req, res) => {
      receivedEvents += Number(req.headers['stevedore-event-count'] ?? 0);
      req.resume().on('end', () => res.end());
    })
  : undefined;
if (receiver) await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const notifications = receiver
  ? { notifications: { endpoints: [{ name: 'profile', url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`, allow: ['127.0.0.1'], ignore: { hits: process.env.PROFILE_NOTIFY === 'no-hits' } }] } }
  : {};
let requestsMade = 0;
const registry = await startRegistry();
const image = await pushImage(registry.url, 'library/hot', 'v1', { format: 'oci', layers: [4096] });
const mirror = await startMirrorProcess({
  port: await freePort(),
  compiled: true,
  nodeArgs: process.env.PROFILE_OFF ? [] : ['--cpu-prof', `--cpu-prof-dir=${profiles}`],
  extra: { ...(process.env.PROFILE_LOGLEVEL ? { logLevel: process.env.PROFILE_LOGLEVEL } : {}), ...notifications },
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
    requestsMade += result.requests.total;
    console.log(`${name}: ${Math.round(result.requests.average)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, errors ${result.errors + result.non2xx}`);
  }
} finally {
  await mirror.stop();
  await registry.stop();
  receiver?.close();
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
  if (receiver) {
    // Everything under notify/ plus the pull event built in the request log: the events' whole cost.
    const notifySamples = profile.samples.filter((id) => {
      const frame = byId.get(id)?.callFrame;
      return frame !== undefined && (frame.url.includes('/notify/') || frame.functionName === 'pullEvent');
    }).length;
    const intervalUs = (profile.endTime - profile.startTime) / total;
    console.log(`\nnotifications: ${notifySamples} of ${total} samples (${((100 * notifySamples) / total).toFixed(2)}%), ${((notifySamples * intervalUs) / requestsMade).toFixed(2)} µs of CPU per request over ${requestsMade} requests; ${receivedEvents} events delivered`);
  }
  console.log(`\nself time, top 30 of ${total} samples:`);
  for (const [key, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${((100 * n) / total).toFixed(1).padStart(5)}%  ${key}`);
}
rmSync(profiles, { recursive: true, force: true });
