// Measures warm blob serving alone: one cached blob, curl to /dev/null,
// 1 and 8 streams, against Stevedore and nginx serving the same file.
// Usage: npm run build && tsx scripts/bench/warm-blob-probe.ts [MiB]
// PROBE_NODE_ARGS adds node flags to the mirror's (as `--max-semi-space-size=2`).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry } from '../../test/support/registry.js';
import { pushBlob } from '../../test/support/seed.js';
import { startMirrorProcess } from '../../test/support/stevedore.js';
import { startNginx } from './servers.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 1024) * MiB;
const nodeArgs = [
  ...(process.env.PROBE_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
  ...(process.env.PROBE_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROBE_PROFILE_DIR}`] : []),
];
const registry = await startRegistry();
const blob = await pushBlob(registry.url, 'library/big', { size, seed: 'warm-probe' });
const mirror = await startMirrorProcess({ port: await freePort(), compiled: true, nodeArgs, upstreams: [{ registry: 'docker.io', url: registry.url, timeouts: { body: '300s' } }] });
const hex = blob.digest.slice(7);
await fetch(`${mirror.url}/v2/library/big/blobs/${blob.digest}`).then((r) => r.arrayBuffer());
// nginx's workers run unprivileged: give them a world-readable copy of the cached file.
const nginxRoot = mkdtempSync(join(tmpdir(), 'warm-probe-'));
chmodSync(nginxRoot, 0o755);
copyFileSync(join(mirror.dir, 'blobs', 'sha256', hex.slice(0, 2), hex), join(nginxRoot, hex));
// The cache's files are the mirror user's alone (0600); the copy is for everyone.
chmodSync(join(nginxRoot, hex), 0o644);
const nginx = await startNginx(nginxRoot);

async function curlAll(urls: string[]): Promise<number> {
  const started = performance.now();
  await Promise.all(urls.map((u) => run('curl', ['-sS', '-o', '/dev/null', '--fail', u], { maxBuffer: 1 << 20 })));
  return (performance.now() - started) / 1000;
}
try {
  const url = `${mirror.url}/v2/library/big/blobs/${blob.digest}`;
  await curlAll([url]); // fill, then the verifying first read
  await curlAll([url]);
  // Write the fill's dirty pages back first: writeback during a round halves it, at random.
  await run('sync', []);
  for (const streams of [1, 8]) {
    for (const [name, target] of [['stevedore', url], ['nginx', `${nginx.url}/${hex}`]] as const) {
      const times: number[] = [];
      for (let i = 0; i < 3; i++) times.push(await curlAll(Array.from({ length: streams }, () => target)));
      const best = Math.min(...times);
      console.log(`${name.padEnd(10)} ${streams} stream(s): best ${((size * streams) / best / 1024 ** 3).toFixed(2)} GiB/s (runs ${times.map((t) => t.toFixed(2)).join(', ')} s)`);
    }
  }
} finally {
  await nginx.stop();
  rmSync(nginxRoot, { recursive: true, force: true });
  await mirror.stop();
  await registry.stop();
}
