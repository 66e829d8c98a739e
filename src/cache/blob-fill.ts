import type { Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Writable } from 'node:stream';
import type { ByteRange } from '../oci/byte-range.js';
import { createDigester, type Digest } from '../oci/digest.js';
import { StoreFullError, StoreUnavailableError, type BlobWrite } from '../storage/blob-store.js';
import { GrowingReader } from './growing-reader.js';
import { ReadBackBlocks } from './read-back-blocks.js';
import { SpoolLostError } from './relay-write.js';
import { SpillBuffer } from './spill-buffer.js';

/**
 * Where a fill is:
 * - `filling`: bytes arrive and the store takes them;
 * - `streaming`: bytes arrive, but the store gave up (a full disk, a bucket down): they reach the clients only;
 * - `verified`: every byte arrived and matched the digest; the store is committing;
 * - `committed`: stored durably and indexed;
 * - `uncached`: verified and sent to its clients, but not kept;
 * - `failed`: the upstream failed or lied; unverified bytes are withdrawn.
 */
export type FillState = 'filling' | 'streaming' | 'verified' | 'committed' | 'uncached' | 'failed';

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

/** The store could not keep the blob: it was streamed to its clients but not cached. */
export class NotCachedError extends Error {
  constructor(readonly digest: string, readonly why: string, cause?: Error) {
    super(`${digest} was served but not cached: ${why}`, { cause });
    this.name = 'NotCachedError';
  }

  /** The store was out of room (rather than out of reach). */
  get storeFull(): boolean {
    return this.cause instanceof StoreFullError;
  }
}

/** What readers of a fill see; the upstream side drives the BlobFill itself. */
export interface FillHandle {
  readonly digest: string;
  /** The blob's size once known: the upstream's Content-Length, or the count at the end. */
  readonly size: number | undefined;
  /** Why the fill failed, once it did; its readers are aborted. */
  readonly failure: Error | undefined;
  /** A reader of bytes [start, end] of the blob; throws FillUnavailableError when it can take no reader. */
  reader(range?: ByteRange): Readable;
  /** Resolves when the blob is cached; rejects with why it was not. */
  readonly done: Promise<void>;
}

/** What a reader at a position gets next. */
export type NextBytes =
  | { bytes: Buffer }
  | { wait: true }
  | { end: true }
  | { error: Error }
  /** The rest comes from the store, as this stream (a reader behind the memory window of a store it cannot read back). */
  | { handover: Readable };

export interface FillOptions {
  /** Size from the upstream's Content-Length; undefined until known. */
  expectedSize: number | undefined;
  /** Called once on a full store, to make room for `bytes` more before giving up on caching. */
  makeRoom: (bytes: number) => Promise<void>;
  /** Told once when the store gives up and the blob goes on to its clients uncached. */
  onUncached: (err: Error) => void;
  /** Opens the committed object from `range.start`, for readers the memory window left behind. */
  openStored: (range: ByteRange) => Promise<Readable>;
}

// The memory below is a fill's own, held while it runs: it scales with the fills
// running (upstreams[].maxConcurrentFetches), not with a cache, so it is not
// part of cache.memoryBudget (src/cache/memory-budget.ts).
/** Bytes kept in memory once the store gave up, for readers to catch up on. */
const SPILL_LIMIT = 32 * 1024 * 1024;
/** The newest bytes kept in memory, so readers at the head need no store read. */
const RECENT_LIMIT = 2 * 1024 * 1024;
/** For a store that cannot read back: how far behind the newest byte a reader may fall and still be fed from memory. */
const WINDOW_LIMIT = 32 * 1024 * 1024;
/** How long the fill waits for its slowest reader before dropping it. */
const STALL_MS = 60_000;

/**
 * One blob being written to the store. Any number of readers stream it as it
 * grows; the final byte is released only after the digest is verified, so no
 * client ever receives a complete response with bytes that fail verification.
 */
export class BlobFill implements FillHandle {
  readonly digest: string;
  readonly done: Promise<void>;
  private current: FillState = 'filling';
  private failed: Error | undefined;
  private received = 0;
  /** Bytes the store took; less than `received` once it gave up. */
  private stored = 0;
  private expected: number | undefined;
  private readonly hash: Hash;
  private readonly readers = new Set<GrowingReader>();
  private readonly listeners = new Set<() => void>();
  private lastAppend: Promise<void> = Promise.resolve();
  /** The newest bytes; once the store gave up, every byte some reader still needs. */
  private memory = new SpillBuffer(0);
  private roomAsked = false;
  /** Shared read-back of stored bytes, for readers behind the memory. */
  private readonly readBack: ReadBackBlocks;
  /** Why the store gave up, once it did. */
  private gaveUp: Error | undefined;
  private released = false;
  private settle!: { resolve: () => void; reject: (err: Error) => void };

  constructor(
    private readonly id: Digest,
    private readonly write: BlobWrite,
    private readonly options: FillOptions,
  ) {
    this.digest = id.value;
    this.expected = options.expectedSize;
    this.hash = createDigester(id.algorithm);
    this.readBack = new ReadBackBlocks((position, length) => this.write.readBack!(position, length));
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined); // settled for whoever awaits it; never an unhandled rejection
  }

  get state(): FillState {
    return this.current;
  }

  get failure(): Error | undefined {
    return this.current === 'failed' ? this.failed : undefined;
  }

  /** Bytes received from the upstream so far. */
  get bytesReceived(): number {
    return this.received;
  }

  get expectedSize(): number | undefined {
    return this.expected;
  }

  get size(): number | undefined {
    return this.verifiedBytes ? this.received : this.expected;
  }

  /** Every received byte is verified and may be served. */
  private get verifiedBytes(): boolean {
    return this.current === 'verified' || this.current === 'committed' || this.current === 'uncached';
  }

  /** Resolves when no append is in flight, so bytesReceived is final (before a resume, say). */
  idle(): Promise<void> {
    return this.lastAppend.catch(() => undefined);
  }

  /**
   * A Writable over the fill, so an upstream body pipes in with backpressure.
   * While one write is in flight the next chunks queue up and go together.
   */
  writable(): Writable {
    return new Writable({
      highWaterMark: 4 << 20,
      writev: (entries, callback) => {
        this.append(entries.map((e) => e.chunk as Buffer)).then(() => callback(), callback);
      },
    });
  }

  private append(chunks: Buffer[]): Promise<void> {
    const done = this.lastAppend.catch(() => undefined).then(() => this.appendNow(chunks));
    this.lastAppend = done;
    return done;
  }

  private async appendNow(chunks: Buffer[]): Promise<void> {
    if (this.current !== 'filling' && this.current !== 'streaming') throw new Error(`append to a ${this.current} fill of ${this.digest}`);
    let length = 0;
    for (const chunk of chunks) length += chunk.length;
    if (this.expected !== undefined && this.received + length > this.expected) throw new SizeMismatchError(this.expected, this.received + length);
    if (this.current === 'streaming') {
      await this.keepForReaders(chunks, length);
      this.expose(chunks, length);
      return;
    }
    // Readers take these bytes from memory at once; the store write runs behind
    // them, so a slow disk or bucket delays the cache, not the clients.
    this.memory.push(chunks, length);
    this.expose(chunks, length);
    await this.store(chunks, length);
    if (this.current === 'filling') this.trimMemory();
  }

  /** Hashes received bytes and lets readers have them. */
  private expose(chunks: Buffer[], length: number): void {
    for (const chunk of chunks) this.hash.update(chunk);
    this.received += length;
    this.changed();
  }

  private async store(chunks: Buffer[], length: number): Promise<void> {
    try {
      await this.write.write(chunks);
      this.stored += length;
      return;
    } catch (err) {
      if (err instanceof StoreFullError && !this.roomAsked) {
        this.roomAsked = true;
        await this.options.makeRoom((this.expected ?? this.received) - this.stored);
        return this.store(chunks, length);
      }
      if (!(err instanceof StoreFullError) && !(err instanceof StoreUnavailableError)) throw err;
      // The store gave up: the rest goes on to the clients through memory, which starts where the store's copy ends.
      this.current = 'streaming';
      this.gaveUp = err;
      this.memory.trim(this.stored);
      this.options.onUncached(err);
      await this.keepForReaders([], 0);
    }
  }

  /** Keeps bytes until every reader has passed them, within SPILL_LIMIT; a reader that stalls is dropped. */
  private async keepForReaders(chunks: Buffer[], length: number): Promise<void> {
    if (this.readers.size === 0) {
      const why = `the store gave up on ${this.digest} and no client is reading it`;
      throw this.gaveUp instanceof StoreFullError ? new StoreFullError(why, { cause: this.gaveUp }) : new StoreUnavailableError(why, { cause: this.gaveUp });
    }
    this.memory.push(chunks, length);
    // Backpressure: wait for the slowest reader.
    for (let round = 0; this.memory.bytes > SPILL_LIMIT && this.readers.size > 0 && round < 100_000; round++) {
      this.memory.trim(this.slowestReader());
      if (this.memory.bytes <= SPILL_LIMIT) break;
      if (!(await this.readerMoves(STALL_MS))) this.dropSlowestReader();
    }
  }

  /** The memory kept while the store takes bytes: a short tail when it can read back, else what the readers still need. */
  private trimMemory(): void {
    if (this.write.readBack) this.memory.keepLast(RECENT_LIMIT);
    else this.memory.trim(Math.max(this.slowestReader(), this.received - WINDOW_LIMIT));
  }

  private slowestReader(): number {
    let slowest = this.received;
    for (const reader of this.readers) slowest = Math.min(slowest, reader.position);
    return slowest;
  }

  private readerMoves(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stop();
        resolve(false);
      }, ms);
      const stop = this.subscribe(() => {
        clearTimeout(timer);
        stop();
        resolve(true);
      });
    });
  }

  private dropSlowestReader(): void {
    let slowest: GrowingReader | undefined;
    for (const reader of this.readers) if (!slowest || reader.position < slowest.position) slowest = reader;
    slowest?.destroy(new Error(`client stalled while ${this.digest} streamed uncached`));
  }

  /** Calls `listener` on every change (bytes, state, a reader moving); returns how to stop. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /** A reader moved on: memory behind every reader may go. */
  readerMoved(): void {
    if (this.current === 'streaming' || !this.write.readBack) this.changed();
  }

  /** What a reader at `position` (reading up to `end`, inclusive, when set) gets next, at most `max` bytes. */
  async next(position: number, end: number | undefined, max: number): Promise<NextBytes> {
    if (this.current === 'failed') return { error: this.failed ?? new Error(`the fill of ${this.digest} failed`) };
    const verified = this.verifiedBytes;
    const last = end ?? (verified ? this.received - 1 : Number.POSITIVE_INFINITY);
    if (position > last) return { end: true };
    // Held back until verified: the last byte of the blob, and of a bounded range.
    const readable = verified ? this.received : Math.max(0, Math.min(this.received, (this.expected ?? this.received) - 1));
    const cap = end !== undefined && !verified ? end : last + 1;
    const available = Math.min(readable, cap) - position;
    if (available <= 0) return { wait: true };
    const wanted = Math.min(available, max);
    const inMemory = this.memory.at(position, wanted);
    if (inMemory && inMemory.length > 0) return { bytes: inMemory };
    if (this.write.readBack && !this.released && position < this.stored) {
      try {
        return { bytes: await this.readBack.at(position, wanted, this.stored) };
      } catch (err) {
        // The local copy is gone: readers behind the memory wait for the stored object.
        if (!(err instanceof SpoolLostError)) throw err;
        if (this.current === 'committed') return { handover: await this.options.openStored({ start: position, end: last }) };
        if (this.current === 'streaming' || this.current === 'uncached') return { error: new Error(`fell behind a blob that could not be cached (${this.digest})`) };
        return { wait: true };
      }
    }
    if (inMemory === undefined) {
      // Behind the memory window.
      if (this.current === 'streaming' || this.current === 'uncached') return { error: new Error(`fell behind a blob that could not be cached (${this.digest})`) };
      if (this.current === 'committed') return { handover: await this.options.openStored({ start: position, end: last }) };
    }
    return { wait: true };
  }

  /** Verifies, then makes the store's copy durable; `index` runs only after that. */
  async commit(index: () => void): Promise<void> {
    if (this.expected !== undefined && this.received !== this.expected) throw new SizeMismatchError(this.expected, this.received);
    const actual = `${this.id.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.digest) throw new DigestMismatchError(this.digest, actual, this.received);
    // Verified bytes may complete their responses now; durability is the cache's concern, not the client's.
    const streaming = this.current === 'streaming';
    this.current = 'verified';
    this.changed();
    if (streaming) return this.endUncached(this.gaveUp?.message ?? 'the store gave up on it', this.gaveUp);
    try {
      await this.write.commit();
      index();
    } catch (err) {
      if (!(err instanceof StoreFullError) && !(err instanceof StoreUnavailableError)) throw err;
      this.options.onUncached(err);
      return this.endUncached(err.message, err);
    }
    this.current = 'committed';
    this.changed();
    this.settle.resolve();
    this.releaseIfUnused();
  }

  private async endUncached(why: string, cause: Error | undefined): Promise<never> {
    const error = new NotCachedError(this.digest, why, cause);
    await this.write.abort();
    this.current = 'uncached';
    this.failed = error;
    this.changed();
    this.settle.reject(error);
    this.releaseIfUnused();
    throw error;
  }

  /** Marks the fill failed: readers of unverified bytes abort, and what the store had is dropped. */
  async fail(error: Error): Promise<void> {
    if (this.current === 'committed' || this.current === 'failed' || this.current === 'uncached') return;
    // Readers of verified bytes finish; only unverified transfers are aborted.
    this.current = this.current === 'verified' ? 'uncached' : 'failed';
    this.failed = error;
    this.changed();
    this.settle.reject(error);
    await this.write.abort();
    this.releaseIfUnused();
  }

  reader(range?: ByteRange): Readable {
    // A reader that comes after the fill let go of its bytes goes to the store.
    if (this.released && this.current !== 'committed') throw new FillUnavailableError(this.digest, 'the fill is over');
    if (this.current === 'failed') throw new FillUnavailableError(this.digest, this.failed?.message ?? 'the fill failed');
    // Once the store gave up, bytes are dropped as readers pass them: a newcomer could never catch up.
    if (this.current === 'streaming' || this.current === 'uncached') throw new FillUnavailableError(this.digest, 'the blob is streaming uncached');
    const reader: GrowingReader = new GrowingReader(this, range?.start ?? 0, range?.end, () => {
      this.readers.delete(reader);
      this.readerMoved();
      this.releaseIfUnused();
    });
    this.readers.add(reader);
    return reader;
  }

  private releaseIfUnused(): void {
    if (this.released || this.readers.size > 0) return;
    if (this.current === 'filling' || this.current === 'streaming' || this.current === 'verified') return;
    this.released = true;
    this.memory = new SpillBuffer(this.received);
    this.readBack.clear();
    void this.write.close();
  }
}
