import { EventEmitter } from 'node:events';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type { Hash } from 'node:crypto';
import { createDigester, type Digest } from '../oci/digest.js';
import { GrowingReader } from './growing-reader.js';
import { SpillBuffer } from './spill-buffer.js';

/** filling → verified (digest checked; readers may finish) → committed (durable and indexed), or failed. */
export type FillState = 'filling' | 'verified' | 'committed' | 'failed';

export class DigestMismatchError extends Error {
  constructor(readonly expected: string, readonly actual: string, readonly size: number) {
    super(`digest mismatch: expected ${expected}, upstream sent ${actual} (${size} bytes)`);
    this.name = 'DigestMismatchError';
  }
}

export class SizeMismatchError extends Error {
  constructor(readonly expected: number, readonly actual: number) {
    super(`size mismatch: expected ${expected} bytes, got ${actual}`);
    this.name = 'SizeMismatchError';
  }
}

/** A fill that can take no new reader; the client should retry. */
export class FillUnavailableError extends Error {
  constructor(readonly digest: string, reason: string) {
    super(`cannot join the fill of ${digest}: ${reason}`);
    this.name = 'FillUnavailableError';
  }
}

/** The disk filled up: the blob was streamed to its clients but not cached. */
export class NotCachedError extends Error {
  constructor(readonly digest: string) {
    super(`${digest} was served but not cached: the cache disk is full`);
    this.name = 'NotCachedError';
  }
}

/** Bytes kept in memory per fill once the disk is full, for clients to catch up on. */
const SPILL_LIMIT = 32 * 1024 * 1024;
/** The newest bytes of a fill kept in memory, so readers at the head need no disk read. */
const RECENT_LIMIT = 8 * 1024 * 1024;
/** How long the fill waits for its slowest reader before dropping it. */
const STALL_MS = 60_000;

export interface FillFiles {
  /** Handle the fill writes through. */
  writeHandle: FileHandle;
  /** Handle readers pread through; stays valid across the rename into place. */
  readHandle: FileHandle;
  tempPath: string;
  /** Verifies nothing: moves the temp file into place durably. */
  publish(): Promise<void>;
  discard(): Promise<void>;
}

/**
 * One blob being written to a temp file. Any number of readers stream it as it
 * grows; the final byte is released only after the digest is verified, so no
 * client ever receives a complete response with bytes that fail verification.
 */
export class BlobFill extends EventEmitter {
  state: FillState = 'filling';
  error: Error | undefined;
  written = 0;
  /** The digest matched: every written byte may be served, even if publishing later fails. */
  verified = false;
  private readonly hash: Hash;
  private readonly readers = new Set<GrowingReader>();
  private readHandleClosed = false;
  private lastAppend: Promise<void> = Promise.resolve();
  /** Bytes in the temp file; less than `written` once the disk filled up. */
  diskBytes = 0;
  /** Set when the disk filled up: the rest of the blob streams through memory, uncached. */
  spill: SpillBuffer | undefined;
  private recent = new SpillBuffer(0);
  /** Called once on a full disk, to make room for the rest of the blob before giving up on caching. */
  onDiskFull: ((bytesNeeded: number) => Promise<void>) | undefined;

  constructor(
    readonly digest: Digest,
    private readonly files: FillFiles,
    /** Size from the upstream's Content-Length; undefined until known. */
    public expectedSize: number | undefined,
  ) {
    super();
    this.setMaxListeners(0);
    this.hash = createDigester(digest.algorithm);
  }

  /** Bytes a reader may see now: everything but the last byte until verified. */
  get readableLimit(): number {
    if (this.verified) return this.written;
    const cap = this.expectedSize !== undefined ? this.expectedSize - 1 : this.written - 1;
    return Math.max(0, Math.min(this.written, cap));
  }

  /** The blob's size once known. */
  get size(): number | undefined {
    return this.state === 'filling' ? this.expectedSize : this.written;
  }

  /** Resolves when no append is in flight, so `written` is final (before a resume, say). */
  idle(): Promise<void> {
    return this.lastAppend.catch(() => undefined);
  }

  /** Appends chunks with one positioned write: syscalls, not chunks, are the cost on the fill path. */
  append(chunks: Buffer[]): Promise<void> {
    const done = this.lastAppend.catch(() => undefined).then(() => this.appendNow(chunks));
    this.lastAppend = done;
    return done;
  }

  private async appendNow(chunks: Buffer[]): Promise<void> {
    if (this.state !== 'filling') throw new Error(`append to a ${this.state} fill of ${this.digest.value}`);
    let length = 0;
    for (const chunk of chunks) length += chunk.length;
    if (this.expectedSize !== undefined && this.written + length > this.expectedSize) {
      throw new SizeMismatchError(this.expectedSize, this.written + length);
    }
    if (this.spill) {
      await this.keepInMemory(chunks, length);
      this.expose(chunks, length);
      return;
    }
    // Readers take these bytes from memory at once; the disk write runs behind
    // them, so a slow disk delays the cache, not the clients.
    this.recent.push(chunks, length);
    this.expose(chunks, length);
    await this.writeToDisk(chunks, length);
    if (this.spill) {
      // The disk filled up on this batch: it continues in the spill buffer, which starts where the file ends.
      await this.keepInMemory(chunks, length);
      return;
    }
    this.recent.keepLast(RECENT_LIMIT);
  }

  /** Hashes received bytes and lets readers have them. */
  private expose(chunks: Buffer[], length: number): void {
    for (const chunk of chunks) this.hash.update(chunk);
    this.written += length;
    this.emit('progress');
  }

  private async writeToDisk(chunks: Buffer[], length: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        let pending = chunks;
        let position = this.diskBytes;
        // Bounded: every pass writes at least one byte or throws.
        while (pending.length > 0) {
          const { bytesWritten } = await this.files.writeHandle.writev(pending, position);
          if (bytesWritten <= 0) throw new Error(`short write to the temp file of ${this.digest.value}`);
          position += bytesWritten;
          pending = dropBytes(pending, bytesWritten);
        }
        this.diskBytes += length;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        if (attempt === 0 && this.onDiskFull) {
          await this.onDiskFull((this.expectedSize ?? this.written) - this.diskBytes);
          continue;
        }
        // Still full: stream the rest to the clients without caching it.
        this.spill = new SpillBuffer(this.diskBytes);
        this.emit('spill');
        return;
      }
    }
  }

  /** Keeps spilled bytes until every reader has passed them, within SPILL_LIMIT. */
  private async keepInMemory(chunks: Buffer[], length: number): Promise<void> {
    const spill = this.spill!;
    if (this.readers.size === 0) throw Object.assign(new Error(`cache disk full and no client is reading ${this.digest.value}`), { code: 'ENOSPC' });
    spill.push(chunks, length);
    // Backpressure: wait for the slowest reader; one that stalls is dropped (its client retries).
    for (let round = 0; spill.bytes > SPILL_LIMIT && this.readers.size > 0 && round < 100_000; round++) {
      this.trimSpill();
      if (spill.bytes <= SPILL_LIMIT) break;
      const moved = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), STALL_MS);
        this.once('advance', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!moved) this.dropSlowestReader();
    }
  }

  private dropSlowestReader(): void {
    let slowest: GrowingReader | undefined;
    for (const reader of this.readers) if (!slowest || reader.position < slowest.position) slowest = reader;
    slowest?.destroy(new Error(`client stalled while ${this.digest.value} streamed past a full cache disk`));
  }

  private trimSpill(): void {
    let slowest = Number.POSITIVE_INFINITY;
    for (const reader of this.readers) slowest = Math.min(slowest, reader.position);
    this.spill?.trim(slowest);
  }

  /** Bytes at `position` (up to `max`) held in memory; empty or undefined when they are not. */
  inMemoryAt(position: number, max: number): Buffer | undefined {
    return (this.spill ?? this.recent).at(position, max);
  }

  /** A reader moved on: spilled bytes behind every reader can go. */
  advanced(): void {
    if (this.spill) this.emit('advance');
  }

  /**
   * A Writable over append(), so an upstream body pipes in with backpressure.
   * While one write is in flight the next chunks queue up, and writev takes them together.
   */
  writable(): Writable {
    return new Writable({
      highWaterMark: 4 << 20,
      writev: (entries, callback) => {
        this.append(entries.map((e) => e.chunk as Buffer)).then(() => callback(), callback);
      },
    });
  }

  /** Verifies, fsyncs and moves the blob into place; `index` runs only after that. */
  async commit(index: () => void): Promise<void> {
    if (this.expectedSize !== undefined && this.written !== this.expectedSize) {
      throw new SizeMismatchError(this.expectedSize, this.written);
    }
    const actual = `${this.digest.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.digest.value) throw new DigestMismatchError(this.digest.value, actual, this.written);
    // Verified bytes may complete their responses now; durability is the cache's concern, not the client's.
    this.state = 'verified';
    this.verified = true;
    this.emit('progress');
    if (this.spill) {
      const error = new NotCachedError(this.digest.value);
      await this.files.writeHandle.close().catch(() => undefined);
      await this.files.discard().catch(() => undefined);
      this.state = 'failed';
      this.error = error;
      this.emit('settled');
      this.releaseReadHandleIfUnused();
      throw error;
    }
    await this.files.writeHandle.sync();
    await this.files.writeHandle.close();
    await this.files.publish();
    index();
    this.recent = new SpillBuffer(this.written); // readers still going read the file
    this.state = 'committed';
    this.emit('progress');
    this.emit('settled');
    this.releaseReadHandleIfUnused();
  }

  /** Marks the fill failed: readers abort, and the temp file is removed. */
  async fail(error: Error): Promise<void> {
    if (this.state === 'committed' || this.state === 'failed') return;
    this.state = 'failed';
    this.error = error;
    // Readers of verified bytes finish; only unverified transfers are aborted.
    if (!this.verified) this.emit('progress');
    this.emit('settled');
    await this.files.writeHandle.close().catch(() => undefined);
    await this.files.discard().catch(() => undefined);
    this.releaseReadHandleIfUnused();
  }

  /** A reader of bytes [start, end] (inclusive; end defaults to the last byte). */
  createReader(start = 0, end?: number): GrowingReader {
    if (this.readHandleClosed) throw new FillUnavailableError(this.digest.value, 'the fill is over');
    // Once spilling, bytes are dropped as readers pass them: a newcomer could never catch up.
    if (this.spill) throw new FillUnavailableError(this.digest.value, 'the cache disk is full and the blob is streaming uncached');
    const reader: GrowingReader = new GrowingReader(this, this.files.readHandle, start, end, () => {
      this.readers.delete(reader);
      this.advanced();
      this.releaseReadHandleIfUnused();
    });
    this.readers.add(reader);
    return reader;
  }

  /** Resolves when the fill is committed, rejects when it failed. */
  settled(): Promise<void> {
    if (this.state === 'committed') return Promise.resolve();
    if (this.state === 'failed') return Promise.reject(this.error);
    return new Promise((resolve, reject) =>
      this.once('settled', () => (this.state === 'committed' ? resolve() : reject(this.error))),
    );
  }

  private releaseReadHandleIfUnused(): void {
    if (this.state === 'filling' || this.state === 'verified' || this.readers.size > 0 || this.readHandleClosed) return;
    this.readHandleClosed = true;
    this.files.readHandle.close().catch(() => undefined);
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
