// Cached private images are the mirror user's alone on disk: the cache
// directory and everything Stevedore creates in it are 0700/0600 by default,
// and group-readable (0750/0640) only when asked, for a front server.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { pushBlob, pushImage } from '../support/seed.js';
import { startMirror } from '../support/stevedore.js';
import { get } from '../support/http.js';

let registry: RegistryHandle | undefined;
const work = mkdtempSync(join(tmpdir(), 'stevedore-modes-'));
after(async () => {
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

const mode = (path: string): number => statSync(path).mode & 0o777;

/** Every path below `dir`, the directory itself included. */
function walk(dir: string): string[] {
  return [dir, ...readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]))];
}

for (const [groupReadable, fileMode, dirMode] of [[false, 0o600, 0o700], [true, 0o640, 0o750]] as const) {
  test(`groupReadable ${groupReadable}: directories ${dirMode.toString(8)}, blob, manifest and index files ${fileMode.toString(8)}`, async () => {
    registry ??= await startRegistry();
    const image = await pushImage(registry.url, 'acme/private', 'v1', { format: 'oci', layers: [4096] });
    const blob = await pushBlob(registry.url, 'acme/private', { size: 2 * 1024 * 1024, seed: 'private-layer' });
    const dir = join(work, `cache-${groupReadable}`);
    const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: registry.url }], dir, cache: { groupReadable } });
    try {
      assert.equal((await get(`${m.url}/v2/acme/private/manifests/v1`, { accept: image.manifestMediaType })).status, 200);
      assert.equal((await get(`${m.url}/v2/acme/private/blobs/${blob.digest}`)).status, 200);
      await m.stevedore.mirror.fills.drain(10_000);
    } finally {
      await m.stop();
    }
    const paths = walk(dir);
    const blobFiles = paths.filter((p) => p.includes(`${join(dir, 'blobs')}/`) && statSync(p).isFile());
    assert.ok(blobFiles.length >= 2, 'the manifest and the blob are on disk');
    for (const path of [...blobFiles, join(dir, 'index.db')]) assert.equal(mode(path), fileMode, path);
    for (const path of paths.filter((p) => statSync(p).isDirectory())) assert.equal(mode(path), dirMode, path);
  });
}
