/** Bytes per block read back from a fill's store copy. */
const BLOCK = 1024 * 1024;
/**
 * Blocks kept for readers at nearby positions. Per fill and only while it
 * runs (so not in cache.memoryBudget): 8 MiB at most, beside the fill's
 * recent bytes.
 */
const KEPT = 8;

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
    const index = Math.floor(position / BLOCK);
    const start = index * BLOCK;
    if (start + BLOCK > stored) return this.read(position, Math.min(wanted, stored - position)); // a block still growing
    let block = this.blocks.get(index);
    if (!block) {
      block = this.read(start, BLOCK);
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
