// A flood of wrong Basic logins, from one address and from many, while a real
// user pulls with skopeo: password checks run on a worker thread, each address
// gets a bounded share of them and a bounded number of failures, and the real
// user's pull goes through.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { Agent, request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';

let registry: RegistryHandle;
let mirror: MirrorProcess;
let seed: StandardSeed;
const work = mkdtempSync(join(tmpdir(), 'stevedore-login-flood-'));
const MAX_FAILURES = 3;
/** The cost `htpasswd -B` uses by default. */
const COST = 10;

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  const htpasswd = join(work, 'htpasswd');
  writeFileSync(htpasswd, `alice:${bcrypt.hashSync('alice-pw', COST)}\n`);
  mirror = await startMirrorProcess({
    port: await freePort(),
    upstreams: [{ registry: 'docker.io', url: registry.url }],
    extra: { auth: { htpasswd, maxFailedLogins: MAX_FAILURES, failedLoginWindow: '10m' } },
  });
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

interface Answer {
  status: number;
  retryAfter: string | undefined;
  detail: string;
}

async function wrongLogin(agent: Agent, user: string): Promise<Answer> {
  const res = await request(`${mirror.url}/v2/`, { dispatcher: agent, headers: { authorization: `Basic ${Buffer.from(`${user}:guess-${Math.random()}`).toString('base64')}` } });
  const body = (await res.body.json()) as { errors: { detail?: string }[] };
  return { status: res.statusCode, retryAfter: res.headers['retry-after'] as string | undefined, detail: String(body.errors[0]?.detail ?? '') };
}

test('while 20 addresses flood the mirror with wrong logins, a real user pulls with fresh credentials', async () => {
  const agents = Array.from({ length: 20 }, (_, i) => new Agent({ localAddress: `127.0.5.${i + 1}`, connections: 8 }));
  // Each address guesses in a loop, twice as often as it may fail: for a known user and for unknown ones.
  const guess = async (agent: Agent): Promise<Answer[]> => {
    const answers: Answer[] = [];
    for (let i = 0; i < 2 * MAX_FAILURES; i++) answers.push(await wrongLogin(agent, i % 2 === 0 ? 'alice' : `nobody-${i}`));
    return answers;
  };
  const flood = Promise.all(agents.map(guess));
  const started = performance.now();
  const pulled = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'alice:alice-pw', `docker://${mirror.url.replace('http://', '')}/library/alpine:3.19`, `dir:${join(work, 'alpine')}`]);
  const ms = Math.round(performance.now() - started);
  const byAddress = await flood;
  const answers = byAddress.flat();
  await Promise.all(agents.map((a) => a.close()));

  assert.equal(pulled.code, 0, pulled.stderr);
  assert.equal(readDirCopy(join(work, 'alpine')).manifestDigest, seed.alpine.manifestDigest);
  console.log(`# skopeo pull by a real user during a flood of ${answers.length} wrong logins from 20 addresses: ${ms} ms`);

  for (const [i, guesses] of byAddress.entries()) {
    // Checked (401) until the address has failed MAX_FAILURES times, then refused unchecked (429) for the window.
    assert.deepEqual(guesses.map((a) => a.status), [...Array(MAX_FAILURES).fill(401), ...Array(MAX_FAILURES).fill(429)], `address ${i + 1}`);
    for (const locked of guesses.slice(MAX_FAILURES)) {
      assert.match(locked.detail, /too many failed logins/);
      assert.ok(Number(locked.retryAfter) > 0 && Number(locked.retryAfter) <= 600, `Retry-After ${locked.retryAfter}`);
    }
  }
});

test('an address past its failures is refused without a check; a login verified before still goes through from it', async () => {
  const agent = new Agent({ localAddress: '127.0.5.1' });
  const wrong = await wrongLogin(agent, 'alice');
  assert.equal(wrong.status, 429);
  assert.match(wrong.detail, /too many failed logins/);
  const res = await request(`${mirror.url}/v2/`, { dispatcher: agent, headers: { authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } });
  await res.body.dump();
  await agent.close();
  assert.equal(res.statusCode, 200, "alice's login, verified during the flood, is remembered and needs no check");
});
