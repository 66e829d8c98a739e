// logrotate and the audit log: `stevedore serve` runs as a process, a pull is
// audited, the file is renamed as logrotate does, SIGHUP makes the server
// reopen the path, and the next pull lands in a new file of the old name
// while the renamed one keeps the earlier line.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushImage, type PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { streamDigest } from '../support/http.js';
import { waitFor } from '../support/wait.js';

let registry: RegistryHandle;
let hub: HubDouble;
let image: PushedImage;
let scratch: string;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry.url, 'team/app', 'v1', { format: 'oci', layers: [30_000, 40_000] });
  hub = await startHubDouble({ upstream: registry.url });
  scratch = mkdtempSync(join(tmpdir(), 'stevedore-audit-'));
});

after(async () => {
  await hub?.stop();
  await registry?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const read = (file: string): string => (existsSync(file) ? readFileSync(file, 'utf8') : '');

test('SIGHUP reopens the audit log: after a rename, new pulls go to a new file and the old one keeps its lines', async () => {
  const auditLog = join(scratch, 'audit.log');
  const rotated = `${auditLog}.1`;
  const [first, second] = image.layers;
  let server: MirrorProcess | undefined;
  try {
    server = await startMirrorProcess({ port: await freePort(), upstreams: [{ registry: 'docker.io', url: hub.url }], auditLog });
    assert.equal((await streamDigest(`${server.url}/v2/team/app/blobs/${first!.digest}`)).digest, first!.digest);
    await waitFor('the first pull in the audit log', () => read(auditLog).includes(first!.digest));

    renameSync(auditLog, rotated);
    const logged = server.logs().length;
    process.kill(server.pid, 'SIGHUP');
    const mirrorLog = server;
    await waitFor('the server to reopen the audit log', () => mirrorLog.logs().slice(logged).includes('"msg":"audit log reopened"'));

    assert.equal((await streamDigest(`${server.url}/v2/team/app/blobs/${second!.digest}`)).digest, second!.digest);
    await waitFor('the second pull in a new audit log', () => read(auditLog).includes(second!.digest));

    const fresh = read(auditLog);
    const old = read(rotated);
    assert.ok(!fresh.includes(first!.digest), 'the new file has only what came after the rotation');
    assert.ok(old.includes(first!.digest), 'the renamed file keeps the first pull');
    assert.ok(!old.includes(second!.digest), 'nothing was written to the renamed file after SIGHUP');
    for (const line of [...fresh.trim().split('\n'), ...old.trim().split('\n')]) {
      const entry = JSON.parse(line) as { msg: string; repo: string; digest: string; status: number };
      assert.deepEqual([entry.msg, entry.repo, entry.status], ['pull', 'team/app', 200]);
    }
    assert.equal(await server.stop().then(() => server!.exited), 0, 'the server kept running after SIGHUP and shut down cleanly');
    server = undefined;
  } finally {
    await server?.stop();
  }
});
