import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ByteRange } from '../oci/byte-range.js';
import type { Digest } from '../oci/digest.js';
import { RecyclingFileReader } from './recycling-reader.js';
import { blobKey, digestOfKey, NotStoredError, ObjectTooLargeError, StoreFullError, type BlobStore, type BlobWrite, type StoredEntry } from './blob-store.js';

/** File and directory modes of the cache: private to the mirror's user, or readable by its group too (a front server's). */
export interface CacheModes {
  file: number;
  dir: number;
}

export const cacheModes = (groupReadable: boolean): CacheModes => (groupReadable ? { file: 0o640, dir: 0o750 } : { file: 0o600, dir: 0o700 });

/** Read buffers for streamed objects: large enough to keep syscalls few, small for small ranges. */
const READ_CHUNK = 1024 * 1024;

const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT';
const isFull = (err: unknown): boolean => ['ENOSPC', 'EDQUOT'].includes((err as NodeJS.ErrnoException).code ?? '');

/** Objects as files under `<root>/blobs/<alg>/<2 hex>/<hex>`; writes in progress under `<root>/tmp/`. */
export class FsStore implements BlobStore {
  readonly kind = 'filesystem';
  readonly shared = false;
  private readonly tempRoot: string;

  constructor(
    private readonly root: string,
    private readonly modes: CacheModes = cacheModes(false),
  ) {
    this.tempRoot = join(root, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(join(this.root, 'blobs'), { recursive: true, mode: this.modes.dir });
    await mkdir(this.tempRoot, { recursive: true, mode: this.modes.dir });
  }

  /** Only a validated Digest reaches here, so the path cannot escape the root. */
  private pathOf(digest: Digest): string {
    return join(this.root, blobKey(digest));
  }

  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    try {
      return { size: (await stat(this.pathOf(digest))).size };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async open(digest: Digest, range?: ByteRange): Promise<{ body: Readable; size: number }> {
    const handle = await this.openHandle(digest);
    let size: number;
    try {
      ({ size } = await handle.stat());
    } catch (err) {
      await handle.close();
      throw err;
    }
    const length = range ? range.end - range.start + 1 : size;
    // The stream owns the handle from here: it closes it at the end, on error and on destroy.
    const body = new RecyclingFileReader(handle, { start: range?.start ?? 0, end: range?.end ?? size - 1 }, Math.min(READ_CHUNK, Math.max(64 * 1024, length)));
    return { body, size };
  }

  async read(digest: Digest, limit: number): Promise<Buffer> {
    const handle = await this.openHandle(digest);
    try {
      const { size } = await handle.stat();
      if (size > limit) throw new ObjectTooLargeError(digest.value, size, limit);
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }

  async put(digest: Digest, bytes: Buffer): Promise<void> {
    const temp = this.tempPath(digest);
    try {
      const handle = await open(temp, 'w', this.modes.file);
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await this.publish(temp, digest);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw isFull(err) ? new StoreFullError((err as Error).message, { cause: err }) : err;
    }
  }

  async beginWrite(digest: Digest): Promise<BlobWrite> {
    const temp = this.tempPath(digest);
    const writeHandle = await open(temp, 'wx', this.modes.file);
    const readHandle = await open(temp, 'r').catch(async (err: unknown) => {
      await writeHandle.close();
      await unlink(temp).catch(() => undefined);
      throw err;
    });
    return new FsWrite(writeHandle, readHandle, temp, () => this.publish(temp, digest));
  }

  async delete(digest: Digest): Promise<void> {
    await rm(this.pathOf(digest), { force: true });
  }

  /** Removes a file under the blob keys that names no digest of ours. */
  async removeStray(key: string): Promise<void> {
    if (!key.startsWith('blobs/') || key.includes('..')) throw new Error(`refusing to remove ${key}: not a blob key`);
    await rm(join(this.root, key), { force: true, recursive: true });
  }

  async *list(): AsyncIterable<StoredEntry> {
    const blobs = join(this.root, 'blobs');
    const sorted = async (dir: string): Promise<string[]> => (await readdir(dir).catch(() => [] as string[])).sort();
    for (const algorithm of await sorted(blobs)) {
      for (const shard of await sorted(join(blobs, algorithm))) {
        for (const name of await sorted(join(blobs, algorithm, shard))) {
          const key = `blobs/${algorithm}/${shard}/${name}`;
          yield { key, digest: digestOfKey(key), size: undefined };
        }
      }
    }
  }

  async sweepIncomplete(): Promise<number> {
    const names = await readdir(this.tempRoot).catch(() => [] as string[]);
    await Promise.all(names.map((name) => rm(join(this.tempRoot, name), { force: true, recursive: true })));
    return names.length;
  }

  /** Free (for the non-root user: bavail) and total bytes of the disk the cache is on. */
  async space(): Promise<{ free: number; total: number }> {
    const s = await statfs(this.root);
    return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
  }

  async localFile(digest: Digest, expectedSize: number): Promise<string | undefined> {
    return (await this.stat(digest))?.size === expectedSize ? blobKey(digest) : undefined;
  }

  async close(): Promise<void> {
    // Nothing held between calls.
  }

  private async openHandle(digest: Digest): Promise<FileHandle> {
    try {
      return await open(this.pathOf(digest), 'r');
    } catch (err) {
      if (isMissing(err)) throw new NotStoredError(digest.value, 'no such file');
      throw err;
    }
  }

  private tempPath(digest: Digest): string {
    return join(this.tempRoot, `${digest.hex.slice(0, 16)}.${randomBytes(6).toString('hex')}.part`);
  }

  /** Renames into place and fsyncs the directory, so the entry survives a crash. */
  private async publish(temp: string, digest: Digest): Promise<void> {
    const target = this.pathOf(digest);
    const dir = dirname(target);
    await mkdir(dir, { recursive: true, mode: this.modes.dir });
    await rename(temp, target);
    const dirHandle = await open(dir, 'r');
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }
}

/**
 * A temp file being written with positioned, batched writes; readers pread it
 * through a second handle, which stays valid across the rename into place.
 */
class FsWrite implements BlobWrite {
  private written = 0;
  private finished = false;
  private readClosed = false;

  constructor(
    private readonly writeHandle: FileHandle,
    private readonly readHandle: FileHandle,
    private readonly temp: string,
    private readonly publish: () => Promise<void>,
  ) {}

  /** One writev per batch: syscalls, not chunks, are the cost on the fill path. */
  async write(chunks: Buffer[]): Promise<void> {
    let pending = chunks;
    let position = this.written;
    try {
      // Bounded: every pass writes at least one byte or throws.
      while (pending.length > 0) {
        const { bytesWritten } = await this.writeHandle.writev(pending, position);
        if (bytesWritten <= 0) throw new Error(`short write to ${this.temp}`);
        position += bytesWritten;
        pending = dropBytes(pending, bytesWritten);
      }
    } catch (err) {
      // A retry writes the whole batch again, from where it started.
      if (isFull(err)) throw new StoreFullError((err as Error).message, { cause: err });
      throw err;
    }
    this.written = position;
  }

  async readBack(position: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.readHandle.read(buffer, 0, length, position);
    return bytesRead === length ? buffer : buffer.subarray(0, bytesRead);
  }

  async commit(): Promise<void> {
    this.finished = true;
    await this.writeHandle.sync();
    await this.writeHandle.close();
    await this.publish();
  }

  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.writeHandle.close().catch(() => undefined);
    await unlink(this.temp).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.readClosed) return;
    this.readClosed = true;
    await this.readHandle.close().catch(() => undefined);
  }
}

/** The chunks left after the first `count` bytes were written. */
function dropBytes(chunks: Buffer[], count: number): Buffer[] {
  let skip = count;
  let index = 0;
  while (index < chunks.length && skip >= chunks[index]!.length) skip -= chunks[index++]!.length;
  const rest = chunks.slice(index);
  if (skip > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(skip);
  return rest;
}
