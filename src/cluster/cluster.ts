/**
 * Coordination between replicas on one bucket. One interface, two
 * implementations: a single replica by itself (no Redis configured), and
 * replicas sharing a Redis. `mirror/` asks it who fills a digest; `jobs/` asks
 * whether this replica does the housekeeping. Nothing else knows Redis exists.
 */

/** Another replica, as this one reaches it. */
export interface Peer {
  id: string;
  /** Its advertise URL. */
  url: string;
}

/** A replica of the cluster, for the admin API and the dashboard. */
export interface ReplicaInfo {
  id: string;
  url: string;
  startedAt: number;
  /** Milliseconds since its last heartbeat, as Redis measured it (no clocks compared). */
  lastHeartbeatMsAgo: number;
  fillsInProgress: number;
  leader: boolean;
  self: boolean;
}

/** The answer to "who fills this digest?" */
export type FillClaim =
  /** This replica: fetch it upstream and write the bucket, under the lease. */
  | { role: 'owner'; lease: FillLease }
  /** Another replica is filling it: stream the fill from it. */
  | { role: 'follower'; owner: Peer }
  /** Another replica has just stored it: read the bucket. */
  | { role: 'stored' };

/** The right to fill one digest. Renewed while held; it lapses when its holder dies. */
export interface FillLease {
  /** The fencing token: grows with every lease granted, cluster-wide. */
  readonly token: number;
  /** Aborts once the lease is known to be someone else's. */
  readonly lost: AbortSignal;
  /**
   * Whether the lease is still this replica's, checked just before the
   * object is published. False only when another replica took it over.
   */
  confirm(): Promise<boolean>;
  /** Gives the lease up; `stored` tells later claimers the blob is in the bucket. */
  release(outcome: 'stored' | 'failed'): Promise<void>;
}

/** A tag's digest as some replica last checked it upstream. */
export interface SharedTag {
  digest: string;
  mediaType: string;
  /** What is left of its tagTtl, from the key's own expiry. */
  freshForMs: number;
}

/** The pull budget an upstream reported last, to any replica. */
export interface SharedRateLimit {
  remaining: number;
  limit?: number;
  windowSeconds?: number;
}

/** A lease nobody else can want: a replica alone, or one cut off from Redis. Content-addressed keys make a second filler harmless, only wasteful. */
export const SOLE_LEASE: FillLease = {
  token: 0,
  lost: new AbortController().signal,
  confirm: async () => true,
  release: async () => undefined,
};

export interface ClusterEvents {
  /** A call to Redis failed; the replica goes on alone for it. */
  redisError(operation: string): void;
  /** A fill's lease was taken over from a replica that stopped renewing it. */
  takeover(): void;
}

export interface Cluster {
  readonly mode: 'single' | 'redis';
  /** This replica. */
  readonly self: Peer;
  /** Whether Redis answers; false: every replica is on its own until it does. */
  readonly connected: boolean;
  /** The secret replica-to-replica requests carry; empty in single mode. */
  readonly peerSecret: string;
  /** Who fills `digest`. Without Redis, always this replica. */
  claimFill(digest: string): Promise<FillClaim>;
  /** Resolves once the lease of `digest` may have lapsed (the holder's remaining TTL), at most `maxMs`. */
  leaseLapse(digest: string, maxMs: number): Promise<void>;
  /** Whether this replica runs the housekeeping (eviction, GC, sweeps, scheduled warm-ups) now. */
  isLeader(): boolean;
  getTag(key: string): Promise<SharedTag | undefined>;
  putTag(key: string, tag: { digest: string; mediaType: string }, ttlMs: number): Promise<void>;
  /** Whether some replica recorded that `digest` belongs to the repository `repoKey` (registry/repo). */
  isLinked(repoKey: string, digest: string): Promise<boolean>;
  /** Records for every replica that `digest` belongs to `repoKey`; in the background. */
  link(repoKey: string, digest: string): void;
  /** Whether some replica saw the upstream answer 404 for this key within notFoundTtl. */
  isNotFound(key: string): Promise<boolean>;
  putNotFound(key: string, ttlMs: number): Promise<void>;
  /** Shares the budget an upstream reported; the latest report wins. */
  publishRateLimit(key: string, rate: SharedRateLimit, ttlMs: number): void;
  /** The latest budget any replica saw for `key` (refreshed in the background; no round trip). */
  rateLimit(key: string): SharedRateLimit | undefined;
  /** Notes accesses of cached digests in the cluster-wide LRU (one batch per access flush). */
  recordAccess(digests: readonly string[]): void;
  /** Digests accessed anywhere in the cluster, least recently used first; undefined without a shared view. */
  accessOrder(): Promise<string[] | undefined>;
  /** Digests no longer in the bucket: out of the cluster-wide LRU, and claims of them fill again. */
  forgetStored(digests: readonly string[]): Promise<void>;
  replicas(): Promise<ReplicaInfo[]>;
  /** How many fills this replica runs, for its heartbeat. */
  reportFills(count: () => number): void;
  close(): Promise<void>;
}

