// Deterministic test content: seeded byte streams, a minimal ustar writer and
// gzip layer builder. Same seed + size always gives the same bytes and digest.
import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';

const CHUNK = 1 << 20; // 1 MiB per generated chunk

export function sha256Hex(data: Buffer | Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sha256Digest(data: Buffer | Uint8Array | string): string {
  return `sha256:${sha256Hex(data)}`;
}

/**
 * Pseudo-random bytes from AES-256-CTR over zeros: native speed (GB/s), so a
 * 1 GiB blob can be regenerated twice (digest pass + upload pass) cheaply.
 */
export function* deterministicChunks(size: number, seed: string, chunkSize = CHUNK): Generator<Buffer> {
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`bad size ${size}`);
  const key = createHash('sha256').update(`stevedore-seed:${seed}`).digest();
  const iv = Buffer.alloc(16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const zeros = Buffer.alloc(Math.min(chunkSize, Math.max(size, 1)));
  let left = size;
  while (left > 0) {
    const n = Math.min(left, zeros.length);
    yield cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
    left -= n;
  }
}

/** Whole buffer of deterministic bytes; only for sizes that comfortably fit in memory. */
export function deterministicBytes(size: number, seed: string): Buffer {
  return Buffer.concat([...deterministicChunks(size, seed)]);
}

export interface BlobSource {
  size: number;
  seed: string;
  /** A fresh stream of the bytes each call; honours backpressure. */
  stream(): Readable;
  /** sha256 over a separate generator pass; yields to the event loop between chunks. */
  digest(): Promise<string>;
}

/** A blob too large to hold in memory, described by (size, seed). */
export function bigBlob(size: number, seed: string): BlobSource {
  let cached: string | undefined;
  return {
    size,
    seed,
    stream: () => Readable.from(deterministicChunks(size, seed), { objectMode: false }),
    async digest(): Promise<string> {
      if (cached !== undefined) return cached;
      const h = createHash('sha256');
      let i = 0;
      for (const chunk of deterministicChunks(size, seed)) {
        h.update(chunk);
        // Let servers in this same process make progress during a 1 GiB hash.
        if (++i % 16 === 0) await new Promise<void>((r) => setImmediate(r));
      }
      cached = `sha256:${h.digest('hex')}`;
      return cached;
    },
  };
}

// ---- ustar ---------------------------------------------------------------

export interface TarEntry {
  /** Relative path, e.g. `seed/layer0.bin`; directories end with `/`. */
  name: string;
  data?: Buffer;
  mode?: number;
}

const TAR_MTIME = 1_700_000_000; // fixed so archives are reproducible

function octal(n: number, width: number): string {
  // width includes the trailing NUL
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader(entry: TarEntry): Buffer {
  const isDir = entry.name.endsWith('/');
  const size = isDir ? 0 : (entry.data?.length ?? 0);
  let name = entry.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 154);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error(`tar name too long: ${name}`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(entry.mode ?? (isDir ? 0o755 : 0o644), 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(TAR_MTIME, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii'); // checksum placeholder: spaces while summing
  h.write(isDir ? '5' : '0', 156, 'ascii');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  h.write(octal(0, 8), 329, 'ascii');
  h.write(octal(0, 8), 337, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

/** A complete ustar archive (entries + two zero blocks), padded to 10 KiB records like GNU tar. */
export function makeTar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(tarHeader(e));
    const data = e.name.endsWith('/') ? undefined : e.data;
    if (data && data.length > 0) {
      parts.push(data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024));
  const len = parts.reduce((n, p) => n + p.length, 0);
  const recordPad = (10240 - (len % 10240)) % 10240;
  if (recordPad) parts.push(Buffer.alloc(recordPad));
  return Buffer.concat(parts);
}

export interface BuiltLayer {
  /** gzip-compressed tar: the registry blob. */
  blob: Buffer;
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar, for rootfs.diff_ids. */
  diffId: string;
  tarSize: number;
}

/**
 * A valid gzip'd tar layer of roughly `approxBytes` uncompressed: a text file
 * plus `seed/<name>.bin` of seeded random bytes (incompressible, so sizes are stable).
 */
export function buildLayer(approxBytes: number, seed: string, name: string): BuiltLayer {
  const text = Buffer.from(`stevedore test layer ${name}\nseed=${seed}\n`);
  const overhead = 512 * 4 + 1024; // headers + text block + end-of-archive
  const binSize = Math.max(0, Math.floor(approxBytes) - overhead);
  const tar = makeTar([
    { name: 'seed/' },
    { name: `seed/${name}.txt`, data: text },
    { name: `seed/${name}.bin`, data: deterministicBytes(binSize, `${seed}/${name}`) },
  ]);
  // Node writes gzip mtime 0, so the compressed bytes are reproducible too.
  const blob = gzipSync(tar, { level: 6 });
  return { blob, digest: sha256Digest(blob), size: blob.length, diffId: sha256Digest(tar), tarSize: tar.length };
}
