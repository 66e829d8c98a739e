import { mkdir, open, readdir, rename, rm, statfs, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { BlobFill } from './blob-fill.js';
import type { BlobStore } from './blob-store.js';

/** File and directory modes of the cache: private to the mirror's user, or readable by its group too (a front server's). */
export interface CacheModes {
  file: number;
  dir: number;
}

export const cacheModes = (groupReadable: boolean): CacheModes => (groupReadable ? { file: 0o640, dir: 0o750 } : { file: 0o600, dir: 0o700 });

/** Blobs as files under `blobs/<alg>/<2 hex>/<hex>`; fills under `tmp/`. */
export class FsBlobStore implements BlobStore {
  private readonly blobRoot: string;
  private readonly tempRoot: string;

  constructor(
    root: string,
    private readonly modes: CacheModes = cacheModes(false),
  ) {
    this.blobRoot = join(root, 'blobs');
    this.tempRoot = join(root, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.blobRoot, { recursive: true, mode: this.modes.dir });
    await mkdir(this.tempRoot, { recursive: true, mode: this.modes.dir });
  }

  get blobRootPath(): string {
    return this.blobRoot;
  }

  /** Free and total bytes of the disk the blobs live on (for the non-root user: bavail). */
  async diskSpace(): Promise<{ free: number; total: number }> {
    const s = await statfs(this.blobRoot);
    return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
  }

  /** Removes a stray file found under the blob root (never outside it). */
  async removePath(path: string): Promise<void> {
    if (!path.startsWith(`${this.blobRoot}/`)) throw new Error(`refusing to remove ${path}: outside the blob store`);
    await rm(path, { force: true, recursive: true });
  }

  /** Only a validated Digest reaches here, so the path cannot escape the root. */
  pathOf(digest: Digest): string {
    return join(this.blobRoot, digest.algorithm, digest.hex.slice(0, 2), digest.hex);
  }

  /** The same file as a URL-style path below the store's root (`blobs/sha256/ab/ab…`), for a front server. */
  relativePathOf(digest: Digest): string {
    return `blobs/${digest.algorithm}/${digest.hex.slice(0, 2)}/${digest.hex}`;
  }

  /** Reads a small file whole; a file larger than `limit` is not read (it is damaged) and fails with EFBIG. */
  async readSmall(digest: Digest, limit = 64 * 1024 * 1024): Promise<Buffer> {
    const handle = await open(this.pathOf(digest), 'r');
    try {
      const { size } = await handle.stat();
      if (size > limit) throw Object.assign(new Error(`${digest.value} is ${size} bytes, more than ${limit}`), { code: 'EFBIG' });
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }

  async writeSmall(digest: Digest, bytes: Buffer): Promise<void> {
    const temp = this.tempPath(digest);
    const handle = await open(temp, 'w', this.modes.file);
    try {
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await this.publish(temp, digest);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
  }

  async beginFill(digest: Digest, expectedSize?: number): Promise<BlobFill> {
    const temp = this.tempPath(digest);
    const writeHandle = await open(temp, 'wx', this.modes.file);
    const readHandle = await open(temp, 'r').catch(async (err: unknown) => {
      await writeHandle.close();
      await unlink(temp).catch(() => undefined);
      throw err;
    });
    return new BlobFill(
      digest,
      {
        writeHandle,
        readHandle,
        tempPath: temp,
        publish: () => this.publish(temp, digest),
        discard: () => unlink(temp),
      },
      expectedSize,
    );
  }

  async remove(digest: Digest): Promise<void> {
    await rm(this.pathOf(digest), { force: true });
  }

  async sweepTemp(): Promise<number> {
    const names = await readdir(this.tempRoot).catch(() => [] as string[]);
    await Promise.all(names.map((name) => rm(join(this.tempRoot, name), { force: true, recursive: true })));
    return names.length;
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
