/** The semaphore's queue is full: the caller should come back later. */
export class QueueFullError extends Error {
  constructor(readonly waiting: number) {
    super(`${waiting} are already waiting`);
    this.name = 'QueueFullError';
  }
}

/** Bounds concurrent work; waiters are served in arrival order, and at most `maxWaiting` may wait. */
export class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly max: number,
    private readonly maxWaiting = Number.POSITIVE_INFINITY,
  ) {}

  get running(): number {
    return this.active;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Resolves with a release function once a slot is free; call it exactly once.
   * Rejects at once with QueueFullError when the queue is full, and with the
   * signal's reason when `signal` aborts before a slot is granted.
   */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.active >= this.max) {
      if (this.waiters.length >= this.maxWaiting) throw new QueueFullError(this.waiters.length);
      await new Promise<void>((resolve, reject) => {
        const grant = (): void => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          const at = this.waiters.indexOf(grant);
          if (at >= 0) this.waiters.splice(at, 1);
          reject(signal!.reason);
        };
        this.waiters.push(grant);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    } else {
      this.active += 1;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.active -= 1;
    };
  }
}
