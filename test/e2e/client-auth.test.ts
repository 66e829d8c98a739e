// Client authentication end to end: a Stevedore process with an htpasswd file
// and per-user access rules, probed with raw HTTP and pulled from with skopeo.
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
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get, json } from '../support/http.js';
import { waitFor } from '../support/wait.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
let seed: StandardSeed;
let host: string;
const work = mkdtempSync(join(tmpdir(), 'stevedore-client-auth-'));
const htpasswd = join(work, 'htpasswd');

/** An htpasswd line as `htpasswd -B` writes it ($2y$). */
const entry = (user: string, password: string): string => `${user}:${bcrypt.hashSync(password, 5).replace(/^\$2b\$/, '$2y$')}`;
const basic = (user: string, password: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  writeFileSync(htpasswd, ['# team mirror users', entry('alice', 'alice-pw'), entry('ci', 'ci-pw'), ''].join('\n'));
  mirror = await startMirrorProcess({
    port: await freePort(),
    upstreams: [
      { registry: 'docker.io', url: hub.url },
      { registry: 'registry.example.com', url: registry.url },
    ],
    extra: {
      auth: {
        htpasswd,
        realm: 'Team Mirror',
        // ci may pull official Docker Hub images only; alice has no rule and may pull anything.
        access: [{ user: 'ci', allow: ['docker.io/library/*'] }],
      },
    },
  });
  host = mirror.url.replace('http://', '');
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

test('without credentials every /v2 request gets 401 UNAUTHORIZED with a Basic challenge; nothing reaches the upstream', async () => {
  hub.resetStats();
  for (const path of ['/v2/', '/v2/library/alpine/manifests/3.19', `/v2/library/alpine/blobs/${seed.alpine.configDigest}`]) {
    for (const method of ['GET', 'HEAD'] as const) {
      const res = await get(`${mirror.url}${path}`, {}, method);
      assert.equal(res.status, 401, `${method} ${path}`);
      assert.equal(res.headers['www-authenticate'], 'Basic realm="Team Mirror", charset="UTF-8"');
      if (method === 'GET') assert.equal(json(res).errors?.[0]?.code, 'UNAUTHORIZED');
    }
  }
  const wrong = await get(`${mirror.url}/v2/library/alpine/manifests/3.19`, basic('alice', 'not-her-password'));
  assert.equal(wrong.status, 401);
  assert.equal(json(wrong).errors?.[0]?.code, 'UNAUTHORIZED');
  assert.doesNotMatch(wrong.body.toString(), /alice-pw|not-her-password/);
  const unknown = await get(`${mirror.url}/v2/`, basic('mallory', 'alice-pw'));
  assert.equal(unknown.status, 401);
  const malformed = await get(`${mirror.url}/v2/`, { authorization: 'Basic !!!notbase64' });
  assert.equal(malformed.status, 401);
  assert.equal(hub.stats().requests.length, 0, 'unauthenticated requests never reach the upstream');
  // The health check stays open for load balancers.
  assert.equal((await get(`${mirror.url}/healthz`)).status, 200);
});

test('per-user rules: a user limited to docker.io/library/* gets 403 DENIED elsewhere; a user without a rule pulls anything', async () => {
  const ok = await get(`${mirror.url}/v2/library/alpine/manifests/3.19`, { ...basic('ci', 'ci-pw'), accept: seed.alpine.manifestMediaType });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['docker-content-digest'], seed.alpine.manifestDigest);
  hub.resetStats();
  const denied = await get(`${mirror.url}/v2/registry.example.com/acme/app/manifests/v1`, basic('ci', 'ci-pw'));
  assert.equal(denied.status, 403);
  const error = json(denied).errors?.[0];
  assert.equal(error?.code, 'DENIED');
  assert.match(String(error?.detail), /user "ci" may not pull registry\.example\.com\/acme\/app/);
  const deniedNs = await get(`${mirror.url}/v2/acme/app/manifests/v1?ns=registry.example.com`, basic('ci', 'ci-pw'));
  assert.equal(deniedNs.status, 403);
  assert.equal(hub.stats().requests.length, 0);
  const alice = await get(`${mirror.url}/v2/registry.example.com/acme/app/manifests/v1`, { ...basic('alice', 'alice-pw'), accept: seed.app.manifestMediaType });
  assert.equal(alice.status, 200);
  assert.equal(alice.headers['docker-content-digest'], seed.app.manifestDigest);
});

test('skopeo pulls with --src-creds; without them, or with a forbidden repository, it fails cleanly', async () => {
  const dest = join(work, 'alpine');
  const pulled = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:ci-pw', `docker://${host}/library/alpine:3.19`, `dir:${dest}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  const copy = readDirCopy(dest);
  assert.equal(copy.manifestDigest, seed.alpine.manifestDigest);
  assert.deepEqual([...copy.blobs].sort(), [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)].sort());

  const anonymous = await skopeo(['copy', '--src-tls-verify=false', '--src-no-creds', `docker://${host}/library/alpine:3.19`, `dir:${join(work, 'anon')}`]);
  assert.notEqual(anonymous.code, 0);
  assert.match(anonymous.stderr, /401|unauthorized|authentication required/i);

  const forbidden = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:ci-pw', `docker://${host}/registry.example.com/acme/app:v1`, `dir:${join(work, 'forbidden')}`]);
  assert.notEqual(forbidden.code, 0);
  assert.match(forbidden.stderr, /denied/i);

  const logs = mirror.logs();
  for (const secret of ['ci-pw', 'alice-pw', Buffer.from('ci:ci-pw').toString('base64')]) assert.ok(!logs.includes(secret), `"${secret}" leaked into the logs`);
  assert.match(logs, /"user":"ci"/, 'the access log names the user');
});

test('SIGHUP reloads the htpasswd file: a new user works, a removed one is refused, and a broken file keeps the old users', async () => {
  const before = await get(`${mirror.url}/v2/`, basic('bob', 'bob-pw'));
  assert.equal(before.status, 401);
  writeFileSync(htpasswd, [entry('alice', 'alice-pw'), entry('bob', 'bob-pw'), ''].join('\n'));
  process.kill(mirror.pid, 'SIGHUP');
  await waitFor('htpasswd reloaded', () => (mirror.logs().match(/htpasswd file reloaded/g) ?? []).length >= 1);
  assert.equal((await get(`${mirror.url}/v2/`, basic('bob', 'bob-pw'))).status, 200);
  assert.equal((await get(`${mirror.url}/v2/`, basic('ci', 'ci-pw'))).status, 401, 'ci was removed');

  writeFileSync(htpasswd, 'bob:{SHA}not-bcrypt\n');
  process.kill(mirror.pid, 'SIGHUP');
  await waitFor('broken htpasswd refused', () => mirror.logs().includes('htpasswd file not reloaded'));
  assert.match(mirror.logs(), /line 1: user \\"bob\\" has no bcrypt hash/);
  assert.equal((await get(`${mirror.url}/v2/`, basic('bob', 'bob-pw'))).status, 200, 'the previous users stay in force');
});

test('a server whose htpasswd file holds a non-bcrypt hash refuses to start and names the line', async () => {
  const bad = join(work, 'htpasswd-md5');
  writeFileSync(bad, `${entry('ok', 'pw')}\nold:$apr1$abcdefgh$0123456789abcdefghijkl\n`);
  await assert.rejects(
    startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }], extra: { auth: { htpasswd: bad } } }),
    /line 2: user "old" has no bcrypt hash; create entries with htpasswd -B/,
  );
});
