// Secrets stay secret: with upstream credentials, client passwords and an admin
// token configured, and after pulls that succeed and fail, no secret (nor a
// bearer token the upstream issued) shows up in logs, error bodies, /metrics or /api.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard } from '../support/seed-standard.js';
import { runCli, startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { skopeo } from '../support/skopeo.js';

const secret = (name: string): string => `${name}-${randomBytes(12).toString('hex')}`;
const HUB_PASSWORD = secret('hub');
const WRONG_PASSWORD = secret('wrong');
const CLIENT_PASSWORD = secret('client');
const ADMIN_TOKEN = secret('admin');
let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
const work = mkdtempSync(join(tmpdir(), 'stevedore-secrets-'));
const auditLog = join(work, 'audit.log');
/** Every body and header the mirror sent, to search for secrets afterwards. */
const seen: string[] = [];

before(async () => {
  registry = await startRegistry();
  await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url, credentials: { username: 'hubuser', password: HUB_PASSWORD } });
  const htpasswd = join(work, 'htpasswd');
  writeFileSync(htpasswd, `dev:${bcrypt.hashSync(CLIENT_PASSWORD, 5)}\n`);
  const passwordFile = join(work, 'hub-password');
  writeFileSync(passwordFile, `${HUB_PASSWORD}\n`);
  mirror = await startMirrorProcess({
    port: await freePort(),
    auditLog,
    upstreams: [
      // The hub password comes from a mounted secret file, as in production.
      { registry: 'docker.io', url: [{ url: hub.url, username: 'hubuser', passwordFile }] },
      // Same hub, wrong password: every pull through it fails at the token endpoint.
      { registry: 'wrong.example', url: hub.url, username: 'hubuser', password: WRONG_PASSWORD },
    ],
    extra: { admin: { token: ADMIN_TOKEN }, auth: { htpasswd } },
  });
  assert.ok(!readFileSync(mirror.configFile, 'utf8').includes(HUB_PASSWORD));
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function fetchText(path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const res = await request(`${mirror.url}${path}`, { headers });
  const text = await res.body.text();
  seen.push(`${path} ${res.statusCode} ${JSON.stringify(res.headers)}\n${text}`);
  return { status: res.statusCode, text };
}

test('after good and bad pulls, no secret appears in logs, audit log, error bodies, /metrics or /api', async () => {
  const client = { authorization: `Basic ${Buffer.from(`dev:${CLIENT_PASSWORD}`).toString('base64')}` };
  const host = mirror.url.replace('http://', '');
  const good = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', `dev:${CLIENT_PASSWORD}`, `docker://${host}/library/alpine:3.19`, `dir:${join(work, 'alpine')}`]);
  assert.equal(good.code, 0, good.stderr);
  const wrong = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', `dev:${CLIENT_PASSWORD}`, `docker://${host}/wrong.example/library/alpine:3.19`, `dir:${join(work, 'wrong')}`]);
  assert.notEqual(wrong.code, 0);
  seen.push(wrong.stderr);

  assert.equal((await fetchText('/v2/wrong.example/library/alpine/manifests/3.19', client)).status, 403, 'the upstream refused our credentials');
  assert.equal((await fetchText('/v2/library/alpine/manifests/3.19', { authorization: `Basic ${Buffer.from(`dev:${CLIENT_PASSWORD}x`).toString('base64')}` })).status, 401);
  assert.equal((await fetchText('/v2/library/nosuch/manifests/1', client)).status, 404);
  assert.equal((await fetchText('/api/stats', { authorization: `Bearer ${ADMIN_TOKEN}x` })).status, 401);
  for (const path of ['/api/stats', '/api/upstreams', '/api/images', '/api/jobs']) {
    assert.equal((await fetchText(path, { authorization: `Bearer ${ADMIN_TOKEN}` })).status, 200, path);
  }
  const metrics = await fetchText('/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.text, /stevedore_/);

  // A config error that involves a secret names the key, not the value.
  const badConfig = join(work, 'bad.yml');
  writeFileSync(badConfig, `upstreams:\n  - registry: docker.io\n    endpoints: [{ url: "${hub.url}", username: u, password: ${ADMIN_TOKEN}, bogus: 1 }]\n`);
  const configError = await runCli(['gc', '--dry-run', '--config', badConfig]);
  assert.notEqual(configError.code, 0);
  assert.match(configError.stderr, /unknown config key "upstreams\.0\.endpoints\.0\.bogus"/);
  seen.push(configError.stdout, configError.stderr);

  const issuedTokens = hub
    .authSeen()
    .map((a) => /^Bearer (.+)$/.exec(a.authorization)?.[1])
    .filter((t): t is string => t !== undefined);
  assert.ok(issuedTokens.length > 0, 'the hub issued bearer tokens that the mirror used');
  const secrets = [
    HUB_PASSWORD,
    WRONG_PASSWORD,
    CLIENT_PASSWORD,
    ADMIN_TOKEN,
    Buffer.from(`hubuser:${HUB_PASSWORD}`).toString('base64'),
    Buffer.from(`hubuser:${WRONG_PASSWORD}`).toString('base64'),
    Buffer.from(`dev:${CLIENT_PASSWORD}`).toString('base64'),
    ...new Set(issuedTokens),
  ];
  const places: Record<string, string> = {
    'server log': mirror.logs(),
    'audit log': readFileSync(auditLog, 'utf8'),
    'responses (bodies and headers)': seen.join('\n'),
  };
  assert.match(places['server log']!, /refused the credentials of user \\"hubuser\\"/, 'the failed upstream login was logged');
  for (const [place, text] of Object.entries(places)) {
    for (const s of secrets) assert.ok(!text.includes(s), `a secret (${s.slice(0, 6)}…) leaked into the ${place}`);
  }
});
