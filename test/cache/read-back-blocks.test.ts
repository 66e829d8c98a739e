// Readers behind a fill share its read-back: one read and one buffer per block.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReadBackBlocks } from '../../src/cache/read-back-blocks.js';
import { parseDigest } from '../../src/oci/digest.js';
import { cacheModes, FsStore } from '../../src/storage/fs-store.js';

const MiB = 1024 * 1024;

test('readers at nearby positions share one read per block; bytes are exact, and a growing block is read directly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-readback-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = new FsStore(dir, cacheModes(false));
  await store.init();
  const bytes = randomBytes(5 * MiB + 12345);
  const write = await store.beginWrite(parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`));
  await write.write([bytes]);
  const reads: [number, number][] = [];
  const blocks = new ReadBackBlocks((position, length) => {
    reads.push([position, length]);
    return write.readBack!(position, length);
  });
  // 32 readers walking the same stretch in 256 KiB steps, interleaved.
  const stored = 4 * MiB + 100; // the fill's store has this much; block 4 is still growing
  for (let position = 0; position < 4 * MiB; position += 256 * 1024) {
    const got = await Promise.all(Array.from({ length: 32 }, () => blocks.at(position, 256 * 1024, stored)));
    for (const g of got) assert.ok(g.equals(bytes.subarray(position, position + 256 * 1024)), `bytes at ${position}`);
    assert.equal(new Set(got.map((g) => g.buffer)).size, 1, 'one buffer shared by every reader');
  }
  assert.deepEqual(reads, [[0, MiB], [MiB, MiB], [2 * MiB, MiB], [3 * MiB, MiB]], 'one read per block for 32 readers');
  const tail = await blocks.at(4 * MiB, 256 * 1024, stored);
  assert.ok(tail.equals(bytes.subarray(4 * MiB, stored)), 'a block still growing: only what is stored, read directly');
  assert.deepEqual(reads.at(-1), [4 * MiB, 100]);
  await write.abort();
  await write.close();
});
