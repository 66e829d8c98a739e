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

/**
 * A fill's write to the shared store, copied into the local spool as well, so
 * readers that join late (the other replicas' streams among them) read the
 * bytes back instead of waiting for the upload to complete.
 */
export function spooledWrite(write: BlobWrite, spool: BlobWrite): BlobWrite {
  let spoolGone = false;
  const dropSpool = async (): Promise<void> => {
    if (spoolGone) return;
    spoolGone = true;
    await spool.abort();
  };
  return {
    async write(chunks) {
      // The spool first: when it is full, the retry after making room must not hand the
      // shared store the same bytes twice. A failing shared store is never retried.
      await spool.write(chunks);
      await write.write(chunks);
    },
    readBack: (position, length) => spool.readBack!(position, length),
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
