// dockerd with registry-mirrors pointing at a Stevedore that requires client
// auth: dockerd answers the Basic challenge with the credentials the docker CLI
// holds for Docker Hub, and without them its pull never gets content.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { dockerdUnavailableReason, startDockerd, type DockerdHandle } from '../support/dockerd.js';
import { requirement } from '../support/requirements.js';

const dockerdTools = requirement('dockerd', await dockerdUnavailableReason());
let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
let dockerd: DockerdHandle;
let seed: StandardSeed;
const work = mkdtempSync(join(tmpdir(), 'stevedore-dockerd-auth-'));

/** What `docker login` would store for Docker Hub, without contacting it. */
function cliCredentials(user: string, password: string | undefined): void {
  const auths = password === undefined ? {} : { 'https://index.docker.io/v1/': { auth: Buffer.from(`${user}:${password}`).toString('base64') } };
  writeFileSync(join(dockerd.baseDir, 'cli', 'config.json'), JSON.stringify({ auths }));
}

const requests = (): { msg?: string; status?: number; user?: string; path?: string }[] =>
  mirror
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { msg?: string; status?: number; user?: string; path?: string })
    .filter((l) => l.msg === 'request');

before(async () => {
  if (dockerdTools.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  const htpasswd = join(work, 'htpasswd');
  writeFileSync(htpasswd, `builder:${bcrypt.hashSync('builder-pw', 5)}\n`);
  mirror = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }], extra: { auth: { htpasswd } } });
  dockerd = await startDockerd({ mirrorUrl: mirror.url });
});

after(async () => {
  await dockerd?.stop();
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

dockerdTools.test('without credentials dockerd is refused by the mirror (401) and its Docker Hub fallback cannot leave the machine', async () => {
  cliCredentials('builder', undefined);
  hub.resetStats();
  const pull = await dockerd.docker(['pull', 'alpine:3.19'], { timeoutMs: 60_000 });
  assert.notEqual(pull.code, 0, 'no credentials, no image');
  const refused = requests().filter((l) => l.status === 401);
  assert.ok(refused.length >= 1, 'dockerd asked the mirror and was challenged');
  assert.equal(hub.stats().blobGet + hub.stats().manifestGet, 0, 'nothing was fetched upstream for an unauthenticated client');
  assert.match(pull.stderr, new RegExp(`registry-1\\.docker\\.io.*proxyconnect tcp: dial tcp 127\\.0\\.0\\.1:${dockerd.proxyPort}: connect: connection refused`), 'the fallback met the closed loopback proxy');
});

dockerdTools.test('with the credentials in the docker CLI config, dockerd answers the Basic challenge and pulls through the mirror', async () => {
  cliCredentials('builder', 'builder-pw');
  hub.resetStats();
  const pull = await dockerd.docker(['pull', 'alpine:3.19']);
  assert.equal(pull.code, 0, `docker pull failed: ${pull.stderr}\n${dockerd.logs().slice(-3000)}`);
  const id = await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'alpine:3.19']);
  assert.equal(id.stdout.trim(), seed.alpine.configDigest);
  assert.equal(hub.stats().blobGet, seed.alpine.layers.length + 1);
  const served = requests().filter((l) => l.status === 200 && l.path?.includes('/blobs/'));
  assert.ok(served.length >= seed.alpine.layers.length + 1);
  assert.ok(served.every((l) => l.user === 'builder'), 'every blob was served to the authenticated user');
  assert.ok(!mirror.logs().includes('builder-pw'), 'the password is never logged');
});
