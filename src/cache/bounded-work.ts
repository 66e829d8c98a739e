/** At most `limit` tasks in flight; `add` waits for room. The first failure is thrown by the next `add` or by `settle`. */
export class BoundedWork {
  private readonly running = new Set<Promise<void>>();
  private failure: unknown;

  constructor(private readonly limit: number) {}

  async add(task: () => Promise<void>): Promise<void> {
    if (this.failure) throw this.failure;
    while (this.running.size >= this.limit) await Promise.race(this.running);
    const run: Promise<void> = task()
      .catch((err: unknown) => void (this.failure ??= err))
      .finally(() => this.running.delete(run));
    this.running.add(run);
  }

  async settle(): Promise<void> {
    await Promise.all(this.running);
    if (this.failure) throw this.failure;
  }
}
