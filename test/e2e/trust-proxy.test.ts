// Behind a real nginx: with trustProxy the client address in the request log,
// the audit log and the admin API's checks is the one nginx appended to
// X-Forwarded-For, and the dashboard's POSTs pass the Origin check through a
// TLS-terminating proxy (X-Forwarded-Proto, X-Forwarded-Host). Without it those
// headers are ignored. And admin.listen: /metrics, /healthz, /api/ and the
// dashboard on a listener of their own, 404 on the public one.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { balancerUnavailableReason } from '../support/nginx-balancer.js';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { requirement } from '../support/requirements.js';
import { pushBlob, type PushedBlob } from '../support/seed.js';
import { runCli, startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { acceptsConnections, waitFor } from '../support/wait.js';

const nginx = requirement('nginx', await balancerUnavailableReason());
const TOKEN = 'trust-proxy-admin-token';
/** The name browsers use for the mirror; nginx terminates TLS for it and passes it as X-Forwarded-Host. */
const PUBLIC_NAME = 'mirror.example.test';
/** What the second nginx server writes into X-Forwarded-For, whatever the client sent. */
const FIXED_CLIENT = '198.51.100.23';
/** The loopback address the test connects to nginx from, so nginx's entry differs from its own socket address. */
const TEST_CLIENT = '127.0.0.9';
const SPOOFED = '203.0.113.7';

let registry: RegistryHandle;
let blob: PushedBlob;
const work = mkdtempSync(join(tmpdir(), 'stevedore-trust-proxy-'));
const stops: (() => Promise<void>)[] = [];
const fromTestClient = new Agent({ localAddress: TEST_CLIENT });

before(async () => {
  if (nginx.missing) return;
  registry = await startRegistry();
  blob = await pushBlob(registry.url, 'library/app', { size: 64 * 1024, seed: 'trust-proxy' });
});

after(async () => {
  for (const stop of stops.reverse()) await stop();
  await registry?.stop();
  await fromTestClient.close();
  rmSync(work, { recursive: true, force: true });
});

interface Proxy {
  /** Appends the client's address to X-Forwarded-For ($proxy_add_x_forwarded_for). */
  appending: string;
  /** Sets X-Forwarded-For to FIXED_CLIENT. */
  fixed: string;
}

/** nginx in front of `backend` as a TLS-terminating proxy would be (plain HTTP here), stopped by its PID. */
async function startProxy(backend: string): Promise<Proxy> {
  const dir = mkdtempSync(join(work, 'nginx-'));
  const [appendPort, fixedPort] = [await freePort(), await freePort()];
  const server = (port: number, forwardedFor: string): string => `  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_set_header X-Forwarded-For ${forwardedFor};
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host ${PUBLIC_NAME};
      proxy_pass ${backend};
    }
  }`;
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k};`).join('\n');
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `${user}worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n${temp}\n${server(appendPort, '$proxy_add_x_forwarded_for')}\n${server(fixedPort, FIXED_CLIENT)}\n}\n`,
  );
  const child = spawn('nginx', ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const stop = async (): Promise<void> => {
    if (running() && child.pid !== undefined) {
      const pid = child.pid;
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => running() && process.kill(pid, 'SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
  };
  stops.push(stop);
  const proxy = { appending: `http://127.0.0.1:${appendPort}`, fixed: `http://127.0.0.1:${fixedPort}` };
  for (let i = 0; i < 100 && running(); i++) {
    if ((await acceptsConnections(appendPort)) && (await acceptsConnections(fixedPort))) return proxy;
    await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
  }
  await stop();
  throw new Error(`nginx did not start: ${stderr}${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8').slice(-2000) : ''}`);
}


async function startWith(name: string, extra: Record<string, unknown>): Promise<{ mirror: MirrorProcess; auditFile: string }> {
  const auditFile = join(work, `${name}-audit.log`);
  const mirror = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: registry.url }], auditLog: auditFile, extra });
  stops.push(() => mirror.stop());
  return { mirror, auditFile };
}

async function call(url: string, options: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; dispatcher?: Agent } = {}): Promise<{ status: number; text: string; reqId: string }> {
  const res = await request(url, { method: options.method ?? 'GET', headers: options.headers, body: options.body, dispatcher: options.dispatcher });
  return { status: res.statusCode, text: await res.body.text(), reqId: String(res.headers['x-request-id']) };
}

const jsonLines = (text: string): Record<string, unknown>[] => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

/** The request log line of one request, once written (after the response ends). */
async function requestLine(mirror: MirrorProcess, reqId: string): Promise<Record<string, unknown>> {
  let line: Record<string, unknown> | undefined;
  await waitFor(`the request line of ${reqId}`, () => (line = jsonLines(mirror.logs()).find((l) => l.msg === 'request' && l.reqId === reqId)) !== undefined);
  return line!;
}

/** The audit lines of pulls of the test blob, once `count` are written. */
async function auditLines(file: string, count: number): Promise<Record<string, unknown>[]> {
  const read = (): Record<string, unknown>[] => (existsSync(file) ? jsonLines(readFileSync(file, 'utf8')).filter((l) => l.digest === blob.digest) : []);
  await waitFor(`${count} audit lines`, () => read().length >= count);
  return read();
}

/** A dry-run GC as the dashboard posts it, from a page of `origin`. */
const gcPost = (origin: string, headers: Record<string, string> = {}): { method: 'POST'; headers: Record<string, string>; body: string } => ({
  method: 'POST',
  headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', origin, ...headers },
  body: '{"dryRun":true}',
});

nginx.test('trustProxy: the client is the X-Forwarded-For entry nginx appended, in the request log, the audit log and the admin checks', { timeout: 120_000 }, async () => {
  const { mirror, auditFile } = await startWith('trusting', { trustProxy: true, admin: { token: TOKEN } });
  const proxy = await startProxy(mirror.url);
  const blobPath = `/v2/library/app/blobs/${blob.digest}`;

  // nginx appends its peer (this test, from 127.0.0.9) to the client's own claim: the last entry is the one to trust.
  const appended = await call(`${proxy.appending}${blobPath}`, { headers: { 'x-forwarded-for': SPOOFED }, dispatcher: fromTestClient });
  assert.equal(appended.status, 200);
  assert.equal((await requestLine(mirror, appended.reqId)).client, TEST_CLIENT);
  const fixed = await call(`${proxy.fixed}${blobPath}`, { headers: { 'x-forwarded-for': SPOOFED } });
  assert.equal(fixed.status, 200);
  assert.equal((await requestLine(mirror, fixed.reqId)).client, FIXED_CLIENT);
  assert.deepEqual((await auditLines(auditFile, 2)).map((l) => l.client), [TEST_CLIENT, FIXED_CLIENT]);

  // The dashboard's page is https://mirror.example.test/ui/: nginx passes that name and scheme, and its POSTs are the mirror's own.
  const own = await call(`${proxy.appending}/api/gc`, gcPost(`https://${PUBLIC_NAME}`));
  assert.equal(own.status, 200, own.text);
  assert.equal((await call(`${proxy.appending}/api/gc`, gcPost('https://evil.example'))).status, 403);
  // A plain-HTTP page (anyone on the path may rewrite it) does not post to the HTTPS API.
  assert.equal((await call(`${proxy.appending}/api/gc`, gcPost(`http://${PUBLIC_NAME}`))).status, 403);
});

nginx.test('without trustProxy, forwarded headers change nothing: the client is the TCP peer and the Host is what nginx sent', { timeout: 120_000 }, async () => {
  const { mirror, auditFile } = await startWith('direct', { admin: { token: TOKEN } });
  const proxy = await startProxy(mirror.url);
  const blobPath = `/v2/library/app/blobs/${blob.digest}`;

  const proxied = await call(`${proxy.fixed}${blobPath}`, { dispatcher: fromTestClient });
  assert.equal(proxied.status, 200);
  assert.equal((await requestLine(mirror, proxied.reqId)).client, '127.0.0.1');
  // Sent straight to Stevedore, a forged X-Forwarded-For is a header like any other.
  const spoofed = await call(`${mirror.url}${blobPath}`, { headers: { 'x-forwarded-for': SPOOFED, 'x-forwarded-proto': 'https' } });
  assert.equal(spoofed.status, 200);
  assert.equal((await requestLine(mirror, spoofed.reqId)).client, '127.0.0.1');
  assert.deepEqual((await auditLines(auditFile, 2)).map((l) => l.client), ['127.0.0.1', '127.0.0.1']);

  // nginx's Host is its backend's address, not the page's name: the page's POST is refused, as before trustProxy.
  assert.equal((await call(`${proxy.appending}/api/gc`, gcPost(`https://${PUBLIC_NAME}`))).status, 403);
  // Nor do forged X-Forwarded-Host and -Proto sent straight to it make that name its own.
  const forged = await call(`${mirror.url}/api/gc`, gcPost(`https://${PUBLIC_NAME}`, { 'x-forwarded-host': PUBLIC_NAME, 'x-forwarded-proto': 'https' }));
  assert.equal(forged.status, 403);
  assert.equal((await call(`${mirror.url}/api/gc`, gcPost(mirror.url))).status, 200);
});

/** The registry's JSON 404 for a route it does not serve. */
const NOT_FOUND = /^\{"errors":\[\{"code":"UNSUPPORTED","message":"no such route in the registry API"/;

nginx.test('admin.listen: /metrics, /healthz, /api/ and the dashboard answer there and 404 on the public port; both close on SIGTERM', { timeout: 120_000 }, async () => {
  const adminPort = await freePort();
  const { mirror } = await startWith('admin-listen', { trustProxy: true, admin: { listen: `127.0.0.1:${adminPort}` } });
  const admin = `http://127.0.0.1:${adminPort}`;

  for (const path of ['/metrics', '/healthz', '/api/stats', '/ui/']) {
    assert.equal((await call(`${admin}${path}`)).status, 200, `${path} on the admin listener`);
    const publicAnswer = await call(`${mirror.url}${path}`);
    assert.equal(publicAnswer.status, 404, `${path} on the public listener`);
    assert.match(publicAnswer.text, NOT_FOUND);
  }
  // Readiness may say 503 (not ready yet), but it answers there, and only there.
  assert.ok([200, 503].includes((await call(`${admin}/readyz`)).status), '/readyz on the admin listener');
  assert.equal((await call(`${mirror.url}/readyz`)).status, 404);
  assert.equal((await call(`${mirror.url}/v2/`)).status, 200);
  assert.equal((await call(`${admin}/v2/`)).status, 404);
  assert.equal((await call(`${admin}${`/v2/library/app/blobs/${blob.digest}`}`)).status, 404);

  // Without a token the admin API is loopback's alone; with trustProxy, the forwarded client must be loopback too.
  assert.equal((await call(`${admin}/api/stats`, { headers: { 'x-forwarded-for': FIXED_CLIENT } })).status, 403);

  // The HEALTHCHECK and the CLI find the admin listener.
  const health = await runCli(['health', '--config', mirror.configFile], { timeoutMs: 30_000 });
  assert.equal(health.code, 0, health.stderr);
  assert.match(health.stdout, new RegExp(`ok: ${admin}/healthz`));
  const gc = await runCli(['gc', '--dry-run', '--config', mirror.configFile], { timeoutMs: 30_000 });
  assert.equal(gc.code, 0, gc.stderr);
  assert.match(gc.stdout, /would free/);

  const publicPort = Number(new URL(mirror.url).port);
  process.kill(mirror.pid, 'SIGTERM');
  assert.equal(await mirror.exited, 0);
  assert.equal(await acceptsConnections(publicPort), false, 'the public listener is closed');
  assert.equal(await acceptsConnections(adminPort), false, 'the admin listener is closed');
});
