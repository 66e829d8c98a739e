// A log or audit file that cannot be written (ENOSPC: /dev/full answers every
// write with it) must not take the mirror down: it serves on, says so once on
// stderr, and still shuts down cleanly.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get } from '../support/http.js';

let registry: RegistryHandle;
let seed: StandardSeed;
let mirror: MirrorProcess;
const work = mkdtempSync(join(tmpdir(), 'stevedore-log-sinks-'));

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  mirror = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: registry.url }], auditLog: '/dev/full', stdout: '/dev/full' });
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

test('with the log and the audit log on a full disk, pulls go on and the failure is reported once per destination', async () => {
  for (let i = 0; i < 3; i++) {
    const dest = join(work, `alpine-${i}`);
    const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.url.replace('http://', '')}/library/alpine:3.19`, `dir:${dest}`]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(readDirCopy(dest).manifestDigest, seed.alpine.manifestDigest);
  }
  assert.equal((await get(`${mirror.url}/v2/`)).status, 200);
  const stderr = mirror.logs().split('\n').filter(Boolean).map((line) => JSON.parse(line) as { msg: string });
  const failures = stderr.filter((l) => /^cannot write log lines to/.test(l.msg));
  assert.deepEqual(failures.map((l) => l.msg.split(' (')[0]).sort(), ['cannot write log lines to /dev/full', 'cannot write log lines to standard output']);
  assert.match(failures[0]!.msg, /ENOSPC/);
});

test('it still stops cleanly on SIGTERM, without hanging on lines it cannot write', async () => {
  process.kill(mirror.pid, 'SIGTERM');
  assert.equal(await mirror.exited, 0);
});
