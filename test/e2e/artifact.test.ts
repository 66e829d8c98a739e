// The artifact that ships: `npm run build` output run as `node dist/cli.js
// serve`, with the dashboard files it copies, and the Dockerfile's
// HEALTHCHECK command run as the image would run it. The image itself cannot
// be built here (no base image can be pulled), so its instructions are linted.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validate } from 'dockerfile-utils';
import { stringify } from 'yaml';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { makeCertificate } from '../support/tls.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get } from '../support/http.js';
import { requirement } from '../support/requirements.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const built = requirement('the built artifact (npm run build)', existsSync(join(repoRoot, 'dist/cli.js')) ? undefined : 'dist/cli.js is missing');
const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
const work = mkdtempSync(join(tmpdir(), 'stevedore-artifact-'));
let registry: RegistryHandle;
let seed: StandardSeed;
let mirror: MirrorProcess;

before(async () => {
  if (built.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  mirror = await startMirrorProcess({ port: await freePort(), compiled: true, upstreams: [{ registry: 'docker.io', url: registry.url }] });
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** The HEALTHCHECK's command, as the exec-form JSON array the Dockerfile gives. */
function healthcheckCommand(): string[] {
  const lines = dockerfile.split('\n');
  const start = lines.findIndex((l) => l.startsWith('HEALTHCHECK'));
  assert.ok(start >= 0, 'the Dockerfile has a HEALTHCHECK');
  let end = start;
  while (lines[end]!.endsWith('\\') && end < lines.length - 1) end += 1;
  const instruction = lines.slice(start, end + 1).map((l) => l.replace(/\\$/, '')).join(' ');
  const command = /CMD\s+(\[.*\])\s*$/.exec(instruction)?.[1];
  assert.ok(command, 'in exec form');
  return JSON.parse(command) as string[];
}

/** Runs the HEALTHCHECK as the image would: from WORKDIR (the repository root holds dist/), with the image's ENV. */
function runHealthcheck(configFile: string): { code: number | null; out: string } {
  const [cmd, ...args] = healthcheckCommand();
  assert.equal(/^WORKDIR (.*)$/m.exec(dockerfile)?.[1], '/app', 'WORKDIR /app holds dist/ as the repository root does here');
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_ENV: 'production', STEVEDORE_CONFIG: configFile };
  const result = spawnSync(cmd === 'node' ? process.execPath : cmd!, args, { cwd: repoRoot, env, encoding: 'utf8', timeout: 30_000 });
  return { code: result.status, out: `${result.stdout}${result.stderr}` };
}

built.test('node dist/cli.js serve pulls with skopeo and serves the dashboard files the build copied', async () => {
  const dest = join(work, 'alpine');
  const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.url.replace('http://', '')}/library/alpine:3.19`, `dir:${dest}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  assert.equal(readDirCopy(dest).manifestDigest, seed.alpine.manifestDigest);
  assert.match(mirror.logs(), /"msg":"stevedore listening"/);
  for (const name of readdirSync(join(repoRoot, 'src/ui'))) {
    const res = await get(`${mirror.url}/ui/${name}`);
    assert.equal(res.status, 200, name);
    assert.ok(res.body.equals(readFileSync(join(repoRoot, 'src/ui', name))), `dist/ui/${name} is the source file`);
  }
  const vendor = await get(`${mirror.url}/ui/vendor-uplot.js`);
  assert.equal(vendor.status, 200);
  assert.ok(vendor.body.length > 10_000);
  assert.equal((await get(`${mirror.url}/healthz`)).status, 200);
});

built.test("the Dockerfile's HEALTHCHECK command passes against the running built server", async () => {
  assert.deepEqual(healthcheckCommand(), ['node', 'dist/cli.js', 'health']);
  const ok = runHealthcheck(mirror.configFile);
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, new RegExp(`ok: ${mirror.url}/healthz`));
});

built.test('the HEALTHCHECK follows the config (another port, TLS with or without a plain listener) and fails when nothing answers', async () => {
  const cert = makeCertificate(work, 'health');
  const tlsPort = await freePort();
  const plainPort = await freePort();
  const cases = [
    { name: 'tls', tls: { cert: cert.certFile, key: cert.keyFile } },
    { name: 'tls-plain', tls: { cert: cert.certFile, key: cert.keyFile, plainListen: `127.0.0.1:${plainPort}` } },
  ];
  for (const c of cases) {
    const m = await startMirrorProcess({ port: tlsPort, compiled: true, upstreams: [{ registry: 'docker.io', url: registry.url }], extra: { tls: c.tls } });
    try {
      const checked = runHealthcheck(m.configFile);
      assert.equal(checked.code, 0, `${c.name}: ${checked.out}`);
      assert.match(checked.out, c.name === 'tls' ? new RegExp(`https://127\\.0\\.0\\.1:${tlsPort}/healthz`) : new RegExp(`http://127\\.0\\.0\\.1:${plainPort}/healthz`));
    } finally {
      await m.stop();
    }
  }
  // Nothing listens there now.
  const gone = join(work, 'gone.yml');
  writeFileSync(gone, stringify({ listen: `0.0.0.0:${tlsPort}`, cache: { dir: join(work, 'gone') } }));
  const failed = runHealthcheck(gone);
  assert.equal(failed.code, 1, failed.out);
  assert.match(failed.out, /ECONNREFUSED|fetch failed|connect/);
});

built.test('the Dockerfile passes a linter (dockerfile-utils) and runs what the build produces', () => {
  const problems = validate(dockerfile);
  assert.deepEqual(problems.map((p) => `line ${p.range.start.line + 1}: ${p.message}`), []);
  // Node flags may come first (test/deploy checks which).
  assert.match(dockerfile, /^ENTRYPOINT \["node", (?:"--[a-z-]+=?[^"]*", )*"dist\/cli\.js"\]$/m);
  assert.match(dockerfile, /^RUN npm run build/m);
  assert.match(dockerfile, /^USER node$/m, 'not root');
});
