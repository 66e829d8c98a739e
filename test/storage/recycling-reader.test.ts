// A warm blob sent through the recycling reader: the bytes arrive whole and
// in order over a real socket, ranges too, and the reader reuses the buffers
// the socket handed back instead of allocating one per read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { isRecycling, sendRecycling } from '../../src/http/blob-body.js';
import { RecyclingFileReader } from '../../src/storage/recycling-reader.js';

const CHUNK = 256 * 1024;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('chunks handed back are read into again; the client gets every byte, whole and in ranges', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-recycling-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const content = randomBytes(40 * CHUNK + 12_345);
  const file = join(dir, 'blob');
  writeFileSync(file, content);
  const readers: RecyclingFileReader[] = [];
  const server = createServer((req, res) => {
    const [start, end] = (req.url ?? '/').slice(1).split('-').map(Number) as [number, number];
    void open(file, 'r').then((handle) => {
      const reader = new RecyclingFileReader(handle, { start, end }, CHUNK);
      readers.push(reader);
      assert.ok(isRecycling(reader));
      res.setHeader('content-length', end - start + 1);
      sendRecycling(res, reader);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const [start, end] of [[0, content.length - 1], [CHUNK - 1, 7 * CHUNK + 3], [content.length - 10, content.length - 1]] as const) {
    const res = await request(`${base}/${start}-${end}`);
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 200);
    assert.equal(sha(body), sha(content.subarray(start, end + 1)), `bytes ${start}-${end}`);
  }
  const whole = readers[0]!;
  assert.ok(whole.allocated <= 6, `41 reads of the whole file took ${whole.allocated} buffers: released ones are reused`);
  assert.ok(whole.destroyed, 'the file is closed at the end');
});

test('a reader whose consumer never hands chunks back allocates as any stream, and its bytes stay intact', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-recycling-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const content = randomBytes(9 * CHUNK);
  writeFileSync(join(dir, 'blob'), content);
  const reader = new RecyclingFileReader(await open(join(dir, 'blob'), 'r'), { start: 0, end: content.length - 1 }, CHUNK);
  const chunks: Buffer[] = [];
  for await (const chunk of reader) chunks.push(chunk as Buffer);
  assert.equal(sha(Buffer.concat(chunks)), sha(content), 'no buffer was reused under a chunk still held');
  assert.equal(reader.allocated, 9);
});
