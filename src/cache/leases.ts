/** Readers of cached objects, per digest: eviction passes over what is being served, so readers never see it vanish. */
export class Leases {
  private readonly held = new Map<string, number>();

  take(digest: string): void {
    this.held.set(digest, (this.held.get(digest) ?? 0) + 1);
  }

  release(digest: string): void {
    const left = (this.held.get(digest) ?? 1) - 1;
    if (left <= 0) this.held.delete(digest);
    else this.held.set(digest, left);
  }

  has(digest: string): boolean {
    return (this.held.get(digest) ?? 0) > 0;
  }
}
