// The htpasswd verifier with its real worker pool and an injected clock:
// remembered logins stay while in use, failures are counted per address,
// checks per address are bounded, and unknown users cost what known ones do.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { HtpasswdVerifier } from '../../src/http/htpasswd.js';

const work = mkdtempSync(join(tmpdir(), 'stevedore-htpasswd-'));
const verifiers: HtpasswdVerifier[] = [];
after(async () => {
  await Promise.all(verifiers.map((v) => v.close()));
  rmSync(work, { recursive: true, force: true });
});

function fileWith(name: string, cost: number): string {
  const path = join(work, name);
  writeFileSync(path, `alice:${bcrypt.hashSync('alice-pw', cost)}\nbob:${bcrypt.hashSync('bob-pw', cost)}\n`);
  return path;
}

function verifier(file: string, limits = { maxFailures: 3, failureWindowMs: 60_000 }): { verifier: HtpasswdVerifier; clock: { ms: number; now(): number } } {
  const clock = { ms: 1_000_000, now(): number { return this.ms; } };
  const made = new HtpasswdVerifier(file, limits, clock);
  verifiers.push(made);
  return { verifier: made, clock };
}

test('a remembered login stays remembered while it is used, and lapses only after five idle minutes', async () => {
  const { verifier: v, clock } = verifier(fileWith('sliding', 4));
  assert.deepEqual(await v.verify('alice', 'alice-pw', '10.0.0.1'), { result: 'ok' });
  assert.equal(v.checks, 1);
  for (let minute = 0; minute < 12; minute++) {
    clock.ms += 60_000;
    assert.deepEqual(await v.verify('alice', 'alice-pw', '10.0.0.1'), { result: 'ok' });
  }
  assert.equal(v.checks, 1, 'twelve minutes of steady use, one check');
  clock.ms += 5 * 60_000 + 1;
  assert.deepEqual(await v.verify('alice', 'alice-pw', '10.0.0.1'), { result: 'ok' });
  assert.equal(v.checks, 2, 'after five idle minutes the password is checked again');
});

test('an address that failed maxFailures times is refused unchecked until its window ends; other addresses are not', async () => {
  const { verifier: v, clock } = verifier(fileWith('failures', 4));
  for (let i = 0; i < 3; i++) assert.deepEqual(await v.verify('alice', `wrong-${i}`, '10.0.0.2'), { result: 'rejected' });
  const checks = v.checks;
  assert.deepEqual(await v.verify('alice', 'alice-pw', '10.0.0.2'), { result: 'locked', retryAfterSeconds: 60 });
  assert.equal(v.checks, checks, 'no check for a locked address');
  assert.deepEqual(await v.verify('bob', 'bob-pw', '10.0.0.3'), { result: 'ok' });
  clock.ms += 30_000;
  assert.deepEqual(await v.verify('alice', 'alice-pw', '10.0.0.2'), { result: 'locked', retryAfterSeconds: 30 });
  clock.ms += 30_001;
  assert.deepEqual(await v.verify('alice', 'alice-pw', '10.0.0.2'), { result: 'ok' });
});

test('one address has at most two checks under way; a third is refused as busy while other addresses are checked', async () => {
  const { verifier: v } = verifier(fileWith('busy', 8), { maxFailures: 0, failureWindowMs: 60_000 });
  const first = v.verify('alice', 'wrong-1', '10.0.0.4');
  const second = v.verify('alice', 'wrong-2', '10.0.0.4');
  assert.deepEqual(await v.verify('alice', 'wrong-3', '10.0.0.4'), { result: 'busy' });
  const other = v.verify('bob', 'bob-pw', '10.0.0.5');
  assert.deepEqual(await Promise.all([first, second, other]), [{ result: 'rejected' }, { result: 'rejected' }, { result: 'ok' }]);
});

test('unknown users are checked against a hash at the cost of the file, so timing does not tell who exists', async () => {
  const { verifier: v } = verifier(fileWith('cost-12', 12));
  assert.equal(await v.dummyCost(), 12);
  assert.deepEqual(await v.verify('mallory', 'alice-pw', '10.0.0.6'), { result: 'rejected' });
  writeFileSync(join(work, 'cost-12'), `alice:${bcrypt.hashSync('alice-pw', 6)}\n`);
  v.reload();
  assert.equal(await v.dummyCost(), 6, 'a reload recomputes it for the new file');
});
