/**
 * The in-memory tail of a blob being filled: bytes from `base` on. Readers at
 * the head take them from here instead of re-reading the file; when the disk is
 * full, it holds the rest of the blob until every reader has passed it.
 */
export class SpillBuffer {
  private chunks: Buffer[] = [];
  bytes = 0;

  constructor(
    /** Offset of the first byte held. */
    public base: number,
  ) {}

  push(chunks: readonly Buffer[], length: number): void {
    this.chunks.push(...chunks);
    this.bytes += length;
  }

  /** Drops whole chunks that lie before `slowest`, the position of the slowest reader. */
  trim(slowest: number): void {
    while (this.chunks.length > 0 && this.base + this.chunks[0]!.length <= slowest) {
      const dropped = this.chunks.shift()!;
      this.base += dropped.length;
      this.bytes -= dropped.length;
    }
  }

  /** Keeps only about the last `limit` bytes (whole chunks). */
  keepLast(limit: number): void {
    while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= limit) {
      const dropped = this.chunks.shift()!;
      this.base += dropped.length;
      this.bytes -= dropped.length;
    }
  }

  /** Bytes at `position`, up to `max`: empty when not received yet, undefined when already dropped. */
  at(position: number, max: number): Buffer | undefined {
    if (position < this.base) return undefined;
    let offset = this.base;
    for (const chunk of this.chunks) {
      if (position < offset + chunk.length) {
        const start = position - offset;
        return chunk.subarray(start, Math.min(chunk.length, start + max));
      }
      offset += chunk.length;
    }
    return Buffer.alloc(0);
  }
}
