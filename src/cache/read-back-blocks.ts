/**
 * Bytes per block read back from a fill's store copy. Small, because readers
 * are handed views of a block, and a view waiting in a socket's queue keeps
 * the whole block alive: 32 clients of a cold 1 GiB blob held ~45-60 MiB of
 * 1 MiB blocks, ~20-30 MiB of 128 KiB ones (scripts/bench/fan-in-probe.ts).
 */
export const READ_BACK_BLOCK = 128 * 1024;
/**
 * Blocks kept for readers at nearby positions. Per fill and only while it
 * runs (so not in cache.memoryBudget): 4 MiB at most, beside the fill's
 * recent bytes.
 */
const KEPT = 32;

/**
 * Read-back of a fill's stored bytes in aligned blocks, the last few kept:
 * readers that fell behind together (the usual case in a fan-in) share one
 * read and one buffer, instead of each reading and allocating its own, which
 * cost a disk read per reader and left garbage for the GC at the rate of
 * every reader's bytes.
 */
export class ReadBackBlocks {
  private readonly blocks = new Map<number, Promise<Buffer>>();

  constructor(private readonly read: (position: number, length: number) => Promise<Buffer>) {}

  /** Up to `wanted` bytes from `position`, of the first `stored` bytes. */
  async at(position: number, wanted: number, stored: number): Promise<Buffer> {
    const index = Math.floor(position / READ_BACK_BLOCK);
    const start = index * READ_BACK_BLOCK;
    if (start + READ_BACK_BLOCK > stored) return this.read(position, Math.min(wanted, stored - position)); // a block still growing
    let block = this.blocks.get(index);
    if (!block) {
      block = this.read(start, READ_BACK_BLOCK);
      this.blocks.set(index, block);
      block.catch(() => this.blocks.delete(index));
      if (this.blocks.size > KEPT) this.blocks.delete(this.blocks.keys().next().value!);
    }
    const bytes = await block;
    return bytes.subarray(position - start, Math.min(bytes.length, position - start + wanted));
  }

  clear(): void {
    this.blocks.clear();
  }
}
