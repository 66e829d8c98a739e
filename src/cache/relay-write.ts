import type { Digest } from '../oci/digest.js';
import { StoreUnavailableError, type BlobStore, type BlobWrite } from '../storage/blob-store.js';

/** How a relayed blob ends: another replica stored it (adopt it), or this one must (upload it). */
export type RelayEnding = 'adopt' | 'upload';

/** Bytes per read of the spool file while uploading it. */
const UPLOAD_CHUNK = 4 * 1024 * 1024;

/**
 * A blob relayed from the replica that fills it, into a local spool file the
 * readers of this replica read back. The shared store is written only when
 * that replica did not: `settle` says which, once every byte verified.
 */
export class RelayWrite implements BlobWrite {
  private written = 0;
  private spoolGone = false;

  constructor(
    private readonly spool: BlobWrite,
    private readonly store: BlobStore,
    private readonly digest: Digest,
    private readonly settle: () => Promise<RelayEnding>,
  ) {}

  async write(chunks: Buffer[]): Promise<void> {
    await this.spool.write(chunks);
    for (const chunk of chunks) this.written += chunk.length;
  }

  readBack(position: number, length: number): Promise<Buffer> {
    return this.spool.readBack!(position, length);
  }

  async commit(): Promise<void> {
    if ((await this.settle()) === 'adopt') {
      const found = await this.store.stat(this.digest).catch(() => undefined);
      if (found?.size === this.written) return;
    }
    await this.upload();
  }

  /** Copies the spool file into the shared store, a chunk at a time, under the store's own backpressure. */
  private async upload(): Promise<void> {
    const write = await this.store.beginWrite(this.digest, this.written);
    try {
      for (let position = 0; position < this.written; ) {
        const bytes = await this.spool.readBack!(position, Math.min(UPLOAD_CHUNK, this.written - position));
        if (bytes.length === 0) throw new StoreUnavailableError(`the spool file of ${this.digest.value} ended at ${position} of ${this.written} bytes`);
        await write.write([bytes]);
        position += bytes.length;
      }
      await write.commit();
    } catch (err) {
      await write.abort();
      throw err;
    } finally {
      await write.close();
    }
  }

  async abort(): Promise<void> {
    await this.dropSpool();
  }

  async close(): Promise<void> {
    await this.dropSpool();
    await this.spool.close();
  }

  private async dropSpool(): Promise<void> {
    if (this.spoolGone) return;
    this.spoolGone = true;
    await this.spool.abort();
  }
}

/** A write whose commit first checks that its fill's lease is still this replica's (the fencing token). */
export function fencedWrite(write: BlobWrite, confirm: () => Promise<boolean>, digest: string): BlobWrite {
  return {
    write: (chunks) => write.write(chunks),
    ...(write.readBack ? { readBack: (position: number, length: number) => write.readBack!(position, length) } : {}),
    async commit() {
      if (!(await confirm())) {
        await write.abort();
        throw new StoreUnavailableError(`another replica took over the fill of ${digest}; its copy is the one kept`);
      }
      await write.commit();
    },
    abort: () => write.abort(),
    close: () => write.close(),
  };
}

/** Why a spooled write cannot read back any more: its local spool failed (a full disk, say). */
export class SpoolLostError extends Error {
  constructor(digest: string, cause: unknown) {
    super(`the local spool of ${digest} failed: ${(cause as Error).message}`, { cause });
    this.name = 'SpoolLostError';
  }
}

/**
 * A fill's write to the bucket, copied into a local spool file as well, so
 * readers that fall behind the fill's memory read the bytes back from local
 * disk instead of waiting for the upload to complete (other replicas' streams
 * among them). The spool is a convenience: when it fails, the fill goes on
 * into the bucket alone, readBack says so (SpoolLostError), and readers
 * behind the memory wait for the stored object.
 */
export function spooledWrite(write: BlobWrite, spool: BlobWrite, digest: string, onSpoolLost: (err: Error) => void): BlobWrite {
  let lost: SpoolLostError | undefined;
  let spoolGone = false;
  const dropSpool = async (): Promise<void> => {
    if (spoolGone) return;
    spoolGone = true;
    await spool.abort();
  };
  const loseSpool = (err: unknown): void => {
    if (lost) return;
    lost = new SpoolLostError(digest, err);
    onSpoolLost(lost);
    void dropSpool().catch(() => undefined);
  };
  return {
    async write(chunks) {
      if (!lost) await spool.write(chunks).catch(loseSpool);
      await write.write(chunks);
    },
    async readBack(position, length) {
      if (lost) throw lost;
      try {
        return await spool.readBack!(position, length);
      } catch (err) {
        loseSpool(err);
        throw lost!;
      }
    },
    commit: () => write.commit(),
    async abort() {
      await write.abort();
      await dropSpool();
    },
    async close() {
      await write.close();
      await dropSpool();
      await spool.close();
    },
  };
}
