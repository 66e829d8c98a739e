// The admin API from another machine. A private network namespace gives
// Stevedore a second, non-loopback address (192.0.2.1, on its own lo), so a
// client can connect from outside loopback without any traffic leaving this
// machine: refused without a token, accepted with it, refused with a wrong one.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { cliCommand } from '../support/stevedore.js';
import { onPath, requirement } from '../support/requirements.js';
import { waitFor } from '../support/wait.js';

const REMOTE = '192.0.2.1'; // TEST-NET-1: never routed anywhere
const PORT = 5000;
const TOKEN = 'remote-admin-token';
const tools = await Promise.all(['unshare', 'nsenter', 'ip', 'curl'].map((t) => onPath([t])));
const netns = requirement(
  'root and network namespaces',
  process.getuid?.() !== 0 ? 'not root' : tools.includes(undefined) ? 'unshare, nsenter, ip or curl is missing' : spawnSync('unshare', ['--net', 'true']).status !== 0 ? 'cannot create a network namespace' : undefined,
);
const work = mkdtempSync(join(tmpdir(), 'stevedore-admin-remote-'));
const servers: { child: ChildProcess; pid: number }[] = [];

/** Runs Stevedore alone in a new network namespace, where lo also carries REMOTE. */
async function serveInNamespace(name: string, admin: Record<string, unknown>): Promise<number> {
  const configFile = join(work, `${name}.yml`);
  writeFileSync(configFile, stringify({ listen: `0.0.0.0:${PORT}`, cache: { dir: join(work, name) }, admin, upstreams: [{ registry: 'docker.io', endpoints: [{ url: 'http://127.0.0.1:9' }] }] }));
  const command = [process.execPath, ...cliCommand(), 'serve', '--config', configFile].map((a) => `'${a}'`).join(' ');
  const child = spawn('unshare', ['--net', '--', 'sh', '-c', `ip link set lo up && ip addr add ${REMOTE}/32 dev lo && exec ${command}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  servers.push({ child, pid: child.pid! });
  await waitFor(`Stevedore listening in its namespace (${output.slice(-300)})`, () => output.includes('"msg":"stevedore listening"') || child.exitCode !== null, 30_000);
  assert.equal(child.exitCode, null, output);
  return child.pid!;
}

/** curl inside the server's namespace, from `from`, to `to`, with a loopback Host (the Host check is not what is tested here). */
function call(pid: number, from: string, to: string, headers: string[] = []): { status: number; body: string } {
  const args = ['--net=/proc/' + pid + '/ns/net', 'curl', '-s', '-o', '-', '-w', '\n%{http_code}', '--interface', from, '-H', 'Host: localhost', ...headers.flatMap((h) => ['-H', h]), `http://${to}:${PORT}/api/stats`];
  const result = spawnSync('nsenter', args, { encoding: 'utf8', timeout: 20_000 });
  const lines = result.stdout.trimEnd().split('\n');
  return { status: Number(lines.pop()), body: lines.join('\n') };
}

let open: number;
let guarded: number;

before(async () => {
  if (netns.missing) return;
  open = await serveInNamespace('open', {});
  guarded = await serveInNamespace('guarded', { token: TOKEN });
});

after(async () => {
  for (const { child, pid } of servers) {
    if (child.exitCode === null) {
      process.kill(pid, 'SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }
  rmSync(work, { recursive: true, force: true });
});

netns.test('without a token: a client on another address gets 403, any loopback address is served', () => {
  const remote = call(open, REMOTE, REMOTE);
  assert.equal(remote.status, 403, remote.body);
  assert.match(remote.body, /"code":"DENIED".*loopback clients only until admin\.token is configured/);
  for (const loopback of ['127.0.0.1', '127.0.0.5']) {
    const local = call(open, loopback, '127.0.0.1');
    assert.equal(local.status, 200, `${loopback}: ${local.body}`);
    assert.ok('totals' in (JSON.parse(local.body) as object));
  }
});

netns.test('with a token: the remote client is served with it, and refused without it or with a wrong one', () => {
  assert.equal(call(guarded, REMOTE, REMOTE, [`Authorization: Bearer ${TOKEN}`]).status, 200);
  for (const header of [[], ['Authorization: Bearer wrong'], [`Authorization: Bearer ${TOKEN}x`], [`Authorization: ${TOKEN}`]]) {
    const refused = call(guarded, REMOTE, REMOTE, header);
    assert.equal(refused.status, 401, `${header.join()}: ${refused.body}`);
    assert.match(refused.body, /"code":"UNAUTHORIZED"/);
  }
  // The token is needed from loopback too, once it is set.
  assert.equal(call(guarded, '127.0.0.1', '127.0.0.1').status, 401);
});
