import { SOLE_LEASE, type Cluster, type FillClaim, type Peer, type ReplicaInfo, type SharedRateLimit, type SharedTag } from './cluster.js';

/**
 * No Redis configured: this replica is the whole cluster. It fills every
 * blob itself (its own single flight still joins concurrent requests), leads
 * its own housekeeping, and shares nothing.
 */
export class SingleReplica implements Cluster {
  readonly mode = 'single';
  readonly connected = true;
  readonly peerSecret = '';
  private readonly startedAt = Date.now();
  private fills: () => number = () => 0;

  constructor(readonly self: Peer) {}

  async claimFill(): Promise<FillClaim> {
    return { role: 'owner', lease: SOLE_LEASE };
  }

  async leaseLapse(): Promise<void> {}

  isLeader(): boolean {
    return true;
  }

  async getTag(): Promise<SharedTag | undefined> {
    return undefined;
  }

  async putTag(): Promise<void> {}

  async isLinked(): Promise<boolean> {
    return false;
  }

  link(): void {}

  async isNotFound(): Promise<boolean> {
    return false;
  }

  async putNotFound(): Promise<void> {}

  publishRateLimit(): void {}

  rateLimit(): SharedRateLimit | undefined {
    return undefined;
  }

  recordAccess(): void {}

  async accessOrder(): Promise<string[] | undefined> {
    return undefined;
  }

  async forgetStored(): Promise<void> {}

  async replicas(): Promise<ReplicaInfo[]> {
    return [{ id: this.self.id, url: this.self.url, startedAt: this.startedAt, lastHeartbeatMsAgo: 0, fillsInProgress: this.fills(), leader: true, self: true }];
  }

  reportFills(count: () => number): void {
    this.fills = count;
  }

  async close(): Promise<void> {}
}
