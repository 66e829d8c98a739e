// /metrics can be closed to anonymous scrapers, and names no upstream account.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get } from '../support/http.js';

let registry: RegistryHandle;
let hub: HubDouble;
let seed: StandardSeed;
const mirrors: TestMirror[] = [];
const work = mkdtempSync(join(tmpdir(), 'stevedore-metrics-'));
const TOKEN = 'metrics-admin-token';

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url, credentials: { username: 'hub-account-7', password: 'hub-pw' } });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function mirrorWith(extra: Record<string, unknown>): Promise<TestMirror> {
  const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url, username: 'hub-account-7', password: 'hub-pw' }], extra });
  mirrors.push(m);
  return m;
}

test('metrics.auth admin: /metrics needs the admin token', async () => {
  const m = await mirrorWith({ admin: { token: TOKEN }, metrics: { auth: 'admin' } });
  const anonymous = await get(`${m.url}/metrics`);
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.headers['www-authenticate'], 'Bearer realm="stevedore-admin"');
  assert.equal((await get(`${m.url}/metrics`, { authorization: 'Bearer wrong' })).status, 401);
  const scraped = await get(`${m.url}/metrics`, { authorization: `Bearer ${TOKEN}` });
  assert.equal(scraped.status, 200);
  assert.match(scraped.body.toString(), /^# HELP stevedore_/m);
});

test('metrics.auth client: /metrics needs a user of the htpasswd file', async () => {
  const htpasswd = join(work, 'htpasswd');
  writeFileSync(htpasswd, `prometheus:${bcrypt.hashSync('scrape-pw', 4)}\n`);
  const m = await mirrorWith({ auth: { htpasswd }, metrics: { auth: 'client' } });
  const anonymous = await get(`${m.url}/metrics`);
  assert.equal(anonymous.status, 401);
  assert.match(String(anonymous.headers['www-authenticate']), /^Basic realm=/);
  const scraped = await get(`${m.url}/metrics`, { authorization: `Basic ${Buffer.from('prometheus:scrape-pw').toString('base64')}` });
  assert.equal(scraped.status, 200);
  assert.match(scraped.body.toString(), /stevedore_http_requests_total/);
});

test('by default /metrics is open, and its rate-limit labels say whose budget without naming the account', async () => {
  const m = await mirrorWith({});
  assert.equal((await get(`${m.url}/v2/library/alpine/manifests/3.19`, { accept: seed.alpine.manifestMediaType })).status, 200);
  const text = (await get(`${m.url}/metrics`)).body.toString();
  assert.match(text, /stevedore_ratelimit_remaining\{[^}]*credential="configured"[^}]*\} \d+/);
  assert.doesNotMatch(text, /hub-account-7/);
  // The admin API, behind its own guard, still tells the operator which account it is.
  const upstreams = JSON.parse((await get(`${m.url}/api/upstreams`)).body.toString()) as { upstreams: { endpoints: { credential: string }[] }[] };
  assert.equal(upstreams.upstreams[0]!.endpoints[0]!.credential, 'hub-account-7');
});
