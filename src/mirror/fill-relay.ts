import { LRUCache } from 'lru-cache';
import type { RelayEnding } from '../cache/cache.js';
import { SOLE_LEASE, type Cluster, type FillLease, type Peer } from '../cluster/cluster.js';
import { PeerRefusedError, type PeerClient, type PeerStream } from '../cluster/peer-client.js';
import type { Logger } from '../log.js';

/** Where the bytes of a blob come from next, for a replica that does not fill it itself. */
export type Feed =
  /** The replica filling it streams them. */
  | { kind: 'peer'; peer: Peer; stream: PeerStream }
  /** Some replica stored it meanwhile: the bucket has it. */
  | { kind: 'stored' }
  /** This replica fetches it upstream: under the lease it took over, or alone (SOLE_LEASE) when no replica could hand it over. */
  | { kind: 'own'; lease: FillLease };

/** How long a replica that sent bytes failing their digest is not streamed from. */
const DISTRUST_MS = 10 * 60_000;
/** The pause before asking again after a replica answered without the blob (its fill just ended, say). */
const REFUSED_PAUSE_MS = 200;
/** The pause before asking again a replica whose fill of the blob is queued. */
const QUEUED_PAUSE_MS = 1_000;

/**
 * Finds, for a replica that is not filling a blob, who can give it the bytes:
 * the filling replica while its lease holds, the bucket once stored, or
 * itself once the filler's lease lapsed (a takeover). Every wait is bounded
 * by the lease TTL, which Redis keeps; no clocks are compared.
 */
export class FillRelay {
  private readonly distrusted = new LRUCache<string, true>({ max: 1000, ttl: DISTRUST_MS });

  constructor(
    private readonly cluster: Cluster,
    private readonly peers: PeerClient,
    private readonly leaseTtlMs: number,
    private readonly log: Logger,
  ) {}

  /** A replica sent bytes that failed their digest: fetch elsewhere for a while. */
  distrust(peerId: string): void {
    this.distrusted.set(peerId, true);
  }

  /**
   * Who gives `digest` from `offset` on. `owner` is the filler a claim just
   * named; `gone` a replica whose stream just broke.
   */
  async locate(digest: string, offset: number, signal: AbortSignal, owner?: Peer, gone?: string): Promise<Feed> {
    const patience = 2 * this.leaseTtlMs + 5_000;
    let deadline = performance.now() + patience;
    let dead = gone;
    let next = owner;
    for (let round = 0; round < 1000 && !signal.aborted; round++) {
      if (next === undefined) {
        const claim = await this.cluster.claimFill(digest);
        if (claim.role === 'stored') return { kind: 'stored' };
        if (claim.role === 'owner') return { kind: 'own', lease: claim.lease };
        next = claim.owner;
      }
      if (this.distrusted.has(next.id) || next.id === this.cluster.self.id) return { kind: 'own', lease: SOLE_LEASE };
      let pause = this.leaseTtlMs;
      if (next.id !== dead && next.url) {
        try {
          return { kind: 'peer', peer: next, stream: await this.peers.open(next, digest, offset, signal) };
        } catch (err) {
          if (signal.aborted) throw err;
          if (err instanceof PeerRefusedError && err.status === 429) {
            // Alive, with the fill queued for an upstream slot: wait for it, however long the queue.
            deadline = performance.now() + patience;
            pause = QUEUED_PAUSE_MS;
          } else if (err instanceof PeerRefusedError && err.status !== 401) {
            pause = REFUSED_PAUSE_MS;
          } else {
            dead = next.id;
            this.log.warn({ digest, replica: next.id, peer: next.url, bytes: offset, err: (err as Error).message }, 'the replica filling this blob does not answer; waiting for its lease to lapse');
          }
        }
      }
      const left = deadline - performance.now();
      if (left <= 0) break;
      if (pause !== this.leaseTtlMs) await delay(Math.min(pause, left));
      else await this.cluster.leaseLapse(digest, Math.min(left, pause));
      next = undefined;
    }
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('nobody waits for this blob any more');
    this.log.warn({ digest, bytes: offset }, 'no replica handed this blob over in time; fetching it upstream alone');
    return { kind: 'own', lease: SOLE_LEASE };
  }

  /**
   * How a relayed blob ends once verified: adopted when its filler stored it,
   * uploaded by this replica when it holds the lease (or takes it now that
   * the filler gave it up). `held` is the lease this replica holds, if any.
   */
  async ending(digest: string, held: { lease?: FillLease }): Promise<RelayEnding> {
    if (held.lease) return (await held.lease.confirm()) ? 'upload' : 'adopt';
    const deadline = performance.now() + 2 * this.leaseTtlMs + 5_000;
    let pause = 25;
    for (let round = 0; round < 1000; round++) {
      const claim = await this.cluster.claimFill(digest);
      if (claim.role === 'stored') return 'adopt';
      if (claim.role === 'owner') {
        held.lease = claim.lease;
        return 'upload';
      }
      if (performance.now() > deadline) break;
      // The filler verified the same bytes and is completing its upload.
      await delay(pause);
      pause = Math.min(pause * 2, 500);
    }
    return 'upload';
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
