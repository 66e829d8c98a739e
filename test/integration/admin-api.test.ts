// Who may reach the admin API and the dashboard: loopback clients while no
// token is set, and then only under a loopback or configured Host name, so a
// page that rebinds its own domain to 127.0.0.1 gets nothing; cross-site
// POSTs are refused whatever Host they carry.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { json, type Fetched } from '../support/http.js';

let registry: RegistryHandle;
let open: TestMirror;
let named: TestMirror;
let withToken: TestMirror;
const TOKEN = 'admin-token-for-tests';

before(async () => {
  registry = await startRegistry();
  const upstreams = [{ registry: 'docker.io', url: registry.url }];
  open = await startMirror({ upstreams });
  named = await startMirror({ upstreams, extra: { admin: { hosts: ['mirror.internal'] } } });
  withToken = await startMirror({ upstreams, extra: { admin: { token: TOKEN } } });
});

after(async () => {
  for (const m of [open, named, withToken]) await m?.stop();
  await registry?.stop();
});

/** A request to the mirror's own socket with any Host header, as a browser on a rebound name would send. */
async function call(m: TestMirror, path: string, headers: Record<string, string>, method: 'GET' | 'POST' = 'GET', body?: string): Promise<Fetched> {
  const res = await request(`${m.url}${path}`, { method, headers, body });
  return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) };
}
const port = (m: TestMirror): string => new URL(m.url).port;

test('without a token, /api and /ui answer loopback Host names only: a rebound attacker domain gets 421', async () => {
  for (const path of ['/api/stats', '/api/upstreams', '/ui/', '/ui/app.js', '/']) {
    const rebound = await call(open, path, { host: `attacker.example:${port(open)}` });
    assert.equal(rebound.status, 421, path);
    assert.equal(json(rebound).errors?.[0]?.code, 'DENIED', path);
    for (const host of [`127.0.0.1:${port(open)}`, `localhost:${port(open)}`, `[::1]:${port(open)}`]) {
      const ok = await call(open, path, { host });
      assert.ok(ok.status === 200 || ok.status === 302, `${path} with Host ${host}: ${ok.status}`);
    }
  }
  const gc = await call(open, '/api/gc', { host: `rebound.example:${port(open)}`, 'content-type': 'application/json' }, 'POST', '{"dryRun":true}');
  assert.equal(gc.status, 421);
  // The registry API is not the admin API: any Host may pull.
  assert.equal((await call(open, '/v2/', { host: 'mirror.example.com' })).status, 200);
});

test('a cross-site POST is refused even under a loopback Host: the Origin must be a name this mirror serves', async () => {
  const headers = { host: `127.0.0.1:${port(open)}`, 'content-type': 'application/json' };
  const crossSite = await call(open, '/api/gc', { ...headers, origin: 'http://attacker.example' }, 'POST', '{"dryRun":true}');
  assert.equal(crossSite.status, 403);
  assert.match(String(json(crossSite).errors?.[0]?.detail), /cross-origin request from http:\/\/attacker\.example refused/);
  const sameSite = await call(open, '/api/gc', { ...headers, origin: `http://127.0.0.1:${port(open)}` }, 'POST', '{"dryRun":true}');
  assert.equal(sameSite.status, 200);
  assert.equal((JSON.parse(sameSite.body.toString()) as { dryRun: boolean }).dryRun, true);
});

test('names in admin.hosts are served besides the loopback ones', async () => {
  assert.equal((await call(named, '/api/stats', { host: `mirror.internal:${port(named)}` })).status, 200);
  assert.equal((await call(named, '/api/stats', { host: 'MIRROR.internal' })).status, 200);
  assert.equal((await call(named, '/api/stats', { host: `other.internal:${port(named)}` })).status, 421);
  const post = await call(named, '/api/gc', { host: 'mirror.internal', origin: 'http://mirror.internal', 'content-type': 'application/json' }, 'POST', '{"dryRun":true}');
  assert.equal(post.status, 200);
});

test('with a token set, any Host may use the API with the token; without it or with a wrong one, 401', async () => {
  const host = { host: `stevedore.example:${port(withToken)}` };
  assert.equal((await call(withToken, '/api/stats', { ...host, authorization: `Bearer ${TOKEN}` })).status, 200);
  for (const authorization of [undefined, 'Bearer wrong', `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`, TOKEN]) {
    const res = await call(withToken, '/api/stats', { ...host, ...(authorization ? { authorization } : {}) });
    assert.equal(res.status, 401, String(authorization));
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="stevedore-admin"');
    assert.ok(!res.body.toString().includes(TOKEN));
  }
  const crossSite = await call(withToken, '/api/gc', { ...host, authorization: `Bearer ${TOKEN}`, origin: 'http://attacker.example', 'content-type': 'application/json' }, 'POST', '{}');
  assert.equal(crossSite.status, 403);
});
