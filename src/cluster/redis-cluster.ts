import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { SOLE_LEASE, type Cluster, type ClusterEvents, type FillClaim, type FillLease, type Peer, type ReplicaInfo, type SharedRateLimit, type SharedTag } from './cluster.js';

export interface RedisClusterOptions {
  /** redis:// or rediss:// URL. */
  url: string;
  /** Overrides the URL's password when set. */
  password: string;
  self: Peer;
  secret: string;
  /** How long a lease outlives a holder that stopped renewing it. */
  leaseTtlMs: number;
  /** Keys of this cluster, so several clusters may share one Redis: derived from the bucket and prefix. */
  namespace: string;
  /** Deadline of every Redis call. */
  commandTimeoutMs: number;
  log: Logger;
  events: ClusterEvents;
}

/** How long "stored" stays on a lease key once its fill committed: claimers then read the bucket. */
const STORED_MARK_MS = 5 * 60_000;
/** Every how many heartbeats the leader prunes the replica registry. */
const PRUNE_EVERY_BEATS = 20;
/** How often the latest shared pull budgets are read. */
const RATE_REFRESH_MS = 2_000;

// Atomic steps on a lease key, so no two replicas ever both hold it. Values are "<replica>|<token>".
const CLAIM = `
local held = redis.call('GET', KEYS[1])
if held then return held end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. '|' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return '+' .. value`;
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
// Still ours, or lapsed with nobody after it (then ours again): 1; someone else's: 0.
const CONFIRM = `
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return 1 end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;
const RELEASE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'stored' then redis.call('SET', KEYS[1], 'stored', 'PX', ARGV[3]) else redis.call('DEL', KEYS[1]) end
return 1`;
// Evicted digests: their "stored" marks go too, so the next claim fills them again.
const UNMARK = `
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == 'stored' then redis.call('DEL', key) end
end
return 0`;
const LEAD = `
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;

interface LeaseCommands {
  claimLease(lease: string, fence: string, value: string, ttl: number): Promise<string>;
  renewLease(lease: string, value: string, ttl: number): Promise<number>;
  confirmLease(lease: string, value: string, ttl: number): Promise<number>;
  releaseLease(lease: string, value: string, outcome: string, storedMs: number): Promise<number>;
  lead(leader: string, id: string, ttl: number): Promise<number>;
  unmarkStored(count: number, ...keys: string[]): Promise<number>;
}

/** The URL with its password masked, for logs. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/**
 * Replicas sharing one Redis: fill leases with fencing tokens, shared tag
 * and 404 answers and pull budgets, a leader lock for housekeeping, a
 * registry of replicas, and the cluster-wide LRU. Every expiry is a Redis key
 * TTL, never a comparison of clocks across machines. When Redis does not
 * answer, each call fails over to this replica alone (its own single flight),
 * and the cluster comes back when Redis does.
 */
export class RedisCluster implements Cluster {
  readonly mode = 'redis';
  readonly self: Peer;
  readonly peerSecret: string;
  private readonly redis: Redis & LeaseCommands;
  private readonly heartbeatMs: number;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly startedAt = Date.now();
  private fills: () => number = () => 0;
  private leaderUntil = 0;
  private beats = 0;
  private ready = false;
  /** Whether the failure of Redis was logged in this episode. */
  private outageLogged = false;
  private readonly watchedRates = new Set<string>();
  private readonly rates = new Map<string, SharedRateLimit>();
  private readonly leases = new Set<RedisLease>();
  private closed = false;

  constructor(private readonly options: RedisClusterOptions) {
    this.self = options.self;
    this.peerSecret = options.secret;
    this.heartbeatMs = Math.max(250, Math.floor(options.leaseTtlMs / 3));
    this.redis = new Redis(options.url, {
      ...(options.password ? { password: options.password } : {}),
      keyPrefix: `stevedore:${options.namespace}:`,
      lazyConnect: true,
      // Fail fast while Redis is away: the replica goes on alone rather than queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.commandTimeoutMs,
      connectTimeout: Math.max(1000, options.commandTimeoutMs * 2),
      // Reconnect for as long as it takes, backing off to a second.
      retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
    }) as Redis & LeaseCommands;
    this.redis.defineCommand('claimLease', { numberOfKeys: 2, lua: CLAIM });
    this.redis.defineCommand('renewLease', { numberOfKeys: 1, lua: RENEW });
    this.redis.defineCommand('confirmLease', { numberOfKeys: 1, lua: CONFIRM });
    this.redis.defineCommand('releaseLease', { numberOfKeys: 1, lua: RELEASE });
    this.redis.defineCommand('lead', { numberOfKeys: 1, lua: LEAD });
    this.redis.defineCommand('unmarkStored', { lua: UNMARK });
    this.redis.on('ready', () => {
      this.ready = true;
      if (this.outageLogged) options.log.warn({ redis: redactRedisUrl(options.url) }, 'Redis answers again: the cluster shares fills and answers again');
      this.outageLogged = false;
      void this.beat();
    });
    this.redis.on('close', () => {
      if (this.ready) this.failed('connection', new Error('connection closed'));
      this.ready = false;
    });
    // ioredis reports each failed reconnect here; the outage is logged once per episode.
    this.redis.on('error', (err: Error) => this.failed('connection', err));
  }

  get connected(): boolean {
    return this.ready;
  }

  /** Connects (without failing: an absent Redis means serving alone until it comes) and starts the heartbeat. */
  async start(): Promise<void> {
    await this.redis.connect().catch((err: unknown) => this.failed('connect', err));
    this.every(this.heartbeatMs, () => this.beat());
    this.every(RATE_REFRESH_MS, () => this.refreshRates());
  }

  private every(ms: number, work: () => Promise<void>): void {
    const timer = setInterval(() => void work().catch(() => undefined), ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** Notes a failed Redis call: counted every time, logged once per outage. */
  private failed(operation: string, err: unknown): void {
    if (this.closed) return;
    this.options.events.redisError(operation);
    if (this.outageLogged) return;
    this.outageLogged = true;
    this.options.log.error({ redis: redactRedisUrl(this.options.url), operation, err: (err as Error).message }, 'Redis does not answer: each replica fills and answers on its own until it does');
  }

  private key(kind: string, name: string): string {
    return `${kind}:${name}`;
  }

  async claimFill(digest: string): Promise<FillClaim> {
    const soloLease = (): FillClaim => ({ role: 'owner', lease: SOLE_LEASE });
    if (!this.ready) return soloLease();
    let answer: string;
    try {
      answer = await this.redis.claimLease(this.key('fill', digest), 'fence', this.self.id, this.options.leaseTtlMs);
    } catch (err) {
      this.failed('claim', err);
      return soloLease();
    }
    if (answer === 'stored') return { role: 'stored' };
    if (answer.startsWith('+')) {
      const value = answer.slice(1);
      const lease = new RedisLease(this.redis, this.key('fill', digest), value, this.options.leaseTtlMs, this.heartbeatMs, (l) => this.leases.delete(l), (op, err) => this.failed(op, err));
      this.leases.add(lease);
      return { role: 'owner', lease };
    }
    const ownerId = answer.slice(0, answer.lastIndexOf('|'));
    return { role: 'follower', owner: { id: ownerId, url: (await this.replicaUrl(ownerId)) ?? '' } };
  }

  private async replicaUrl(id: string): Promise<string | undefined> {
    if (id === this.self.id) return this.self.url;
    try {
      const raw = await this.redis.hget('replicas', id);
      return raw ? (JSON.parse(raw) as { url: string }).url : undefined;
    } catch (err) {
      this.failed('replica lookup', err);
      return undefined;
    }
  }

  async leaseLapse(digest: string, maxMs: number): Promise<void> {
    let wait = Math.min(1000, maxMs);
    try {
      const left = await this.redis.pttl(this.key('fill', digest));
      wait = left < 0 ? 0 : Math.min(left + 25, maxMs);
    } catch (err) {
      this.failed('lease ttl', err);
    }
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait).unref());
  }

  isLeader(): boolean {
    return performance.now() < this.leaderUntil;
  }

  /** The heartbeat: this replica in the registry, and the leader lock taken or kept. */
  private async beat(): Promise<void> {
    if (!this.ready || this.closed) return;
    const ttl = this.heartbeatMs * 3;
    const sent = performance.now();
    try {
      await this.redis
        .multi()
        .hset('replicas', this.self.id, JSON.stringify({ url: this.self.url, startedAt: this.startedAt }))
        .set(this.key('alive', this.self.id), String(this.fills()), 'PX', ttl)
        .exec();
      const leading = await this.redis.lead('leader', this.self.id, ttl);
      // Counted from before the call: the lock is surely ours until then, by our own clock alone.
      this.leaderUntil = leading === 1 ? sent + ttl - this.heartbeatMs : 0;
      // The leader drops replicas whose heartbeat lapsed from the registry now and then.
      if (leading === 1 && ++this.beats % PRUNE_EVERY_BEATS === 0) await this.listReplicas();
    } catch (err) {
      this.failed('heartbeat', err);
    }
  }

  async getTag(key: string): Promise<SharedTag | undefined> {
    if (!this.ready) return undefined;
    try {
      const [[, raw], [, left]] = (await this.redis.multi().get(this.key('tag', key)).pttl(this.key('tag', key)).exec()) as [[unknown, string | null], [unknown, number]];
      if (!raw || left <= 0) return undefined;
      const tag = JSON.parse(raw) as { digest: string; mediaType: string };
      return { ...tag, freshForMs: left };
    } catch (err) {
      this.failed('tag read', err);
      return undefined;
    }
  }

  async putTag(key: string, tag: { digest: string; mediaType: string }, ttlMs: number): Promise<void> {
    if (!this.ready || ttlMs <= 0) return;
    await this.redis.set(this.key('tag', key), JSON.stringify({ digest: tag.digest, mediaType: tag.mediaType }), 'PX', ttlMs).catch((err: unknown) => this.failed('tag write', err));
  }

  async isLinked(repoKey: string, digest: string): Promise<boolean> {
    if (!this.ready) return false;
    try {
      return (await this.redis.sismember(this.key('links', repoKey), digest)) === 1;
    } catch (err) {
      this.failed('link read', err);
      return false;
    }
  }

  link(repoKey: string, digest: string): void {
    if (!this.ready) return;
    void this.redis.sadd(this.key('links', repoKey), digest).catch((err: unknown) => this.failed('link write', err));
  }

  async isNotFound(key: string): Promise<boolean> {
    if (!this.ready) return false;
    try {
      return (await this.redis.exists(this.key('404', key))) === 1;
    } catch (err) {
      this.failed('404 read', err);
      return false;
    }
  }

  async putNotFound(key: string, ttlMs: number): Promise<void> {
    if (!this.ready || ttlMs <= 0) return;
    await this.redis.set(this.key('404', key), '1', 'PX', ttlMs).catch((err: unknown) => this.failed('404 write', err));
  }

  publishRateLimit(key: string, rate: SharedRateLimit, ttlMs: number): void {
    this.rates.set(key, rate);
    if (!this.ready || ttlMs <= 0) return;
    void this.redis.set(this.key('rate', key), JSON.stringify(rate), 'PX', ttlMs).catch((err: unknown) => this.failed('budget write', err));
  }

  rateLimit(key: string): SharedRateLimit | undefined {
    this.watchedRates.add(key);
    // While Redis is away the shared view ages without expiring: each replica goes by its own.
    return this.ready ? this.rates.get(key) : undefined;
  }

  private async refreshRates(): Promise<void> {
    if (!this.ready || this.watchedRates.size === 0) return;
    const keys = [...this.watchedRates];
    try {
      const values = await this.redis.mget(keys.map((k) => this.key('rate', k)));
      keys.forEach((k, i) => {
        const raw = values[i];
        if (raw) this.rates.set(k, JSON.parse(raw) as SharedRateLimit);
        else this.rates.delete(k);
      });
    } catch (err) {
      this.failed('budget read', err);
    }
  }

  /** A batch goes in scored by a cluster-wide counter, never by any machine's clock. */
  recordAccess(digests: readonly string[]): void {
    if (!this.ready || digests.length === 0) return;
    void (async () => {
      const tick = await this.redis.incr('access-clock');
      await this.redis.zadd('access', ...digests.flatMap((d) => [tick, d]));
    })().catch((err: unknown) => this.failed('access write', err));
  }

  async accessOrder(): Promise<string[] | undefined> {
    if (!this.ready) return undefined;
    try {
      return await this.redis.zrange('access', '0', '-1');
    } catch (err) {
      this.failed('access read', err);
      return undefined;
    }
  }

  async forgetStored(digests: readonly string[]): Promise<void> {
    if (!this.ready || digests.length === 0) return;
    try {
      await this.redis.zrem('access', ...digests);
      await this.redis.unmarkStored(digests.length, ...digests.map((d) => this.key('fill', d)));
    } catch (err) {
      this.failed('access write', err);
    }
  }

  async replicas(): Promise<ReplicaInfo[]> {
    const alone = (): ReplicaInfo[] => [{ id: this.self.id, url: this.self.url, startedAt: this.startedAt, lastHeartbeatMsAgo: 0, fillsInProgress: this.fills(), leader: this.isLeader(), self: true }];
    if (!this.ready) return alone();
    try {
      return await this.listReplicas();
    } catch (err) {
      this.failed('replica list', err);
      return alone();
    }
  }

  private async listReplicas(): Promise<ReplicaInfo[]> {
    const ttl = this.heartbeatMs * 3;
    const all = await this.redis.hgetall('replicas');
    const leader = await this.redis.get('leader');
    const ids = Object.keys(all);
    const pipeline = this.redis.multi();
    for (const id of ids) pipeline.get(this.key('alive', id)).pttl(this.key('alive', id));
    const answers = ((await pipeline.exec()) ?? []).map(([, v]) => v);
    const replicas: ReplicaInfo[] = [];
    const gone: string[] = [];
    ids.forEach((id, i) => {
      const fills = answers[i * 2] as string | null;
      const left = answers[i * 2 + 1] as number;
      if (fills === null || left < 0) {
        gone.push(id);
        return;
      }
      const { url, startedAt } = JSON.parse(all[id]!) as { url: string; startedAt: number };
      replicas.push({ id, url, startedAt, lastHeartbeatMsAgo: Math.max(0, ttl - left), fillsInProgress: Number(fills), leader: id === leader, self: id === this.self.id });
    });
    // Replicas whose heartbeat lapsed leave the registry.
    if (gone.length > 0) await this.redis.hdel('replicas', ...gone).catch(() => undefined);
    return replicas.sort((a, b) => a.url.localeCompare(b.url));
  }

  reportFills(count: () => number): void {
    this.fills = count;
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    for (const lease of [...this.leases]) await lease.release('failed');
    if (this.ready) {
      // Leave at once rather than when the heartbeat lapses; give the leader lock up.
      await this.redis
        .multi()
        .hdel('replicas', this.self.id)
        .del(this.key('alive', this.self.id))
        .exec()
        .catch(() => undefined);
      if (this.isLeader()) await this.redis.del('leader').catch(() => undefined);
    }
    this.closed = true;
    this.redis.disconnect();
  }
}

class RedisLease implements FillLease {
  readonly token: number;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private released = false;

  constructor(
    private readonly redis: LeaseCommands,
    private readonly key: string,
    private readonly value: string,
    private readonly ttlMs: number,
    renewMs: number,
    private readonly done: (lease: RedisLease) => void,
    private readonly failed: (operation: string, err: unknown) => void,
  ) {
    this.token = Number(value.slice(value.lastIndexOf('|') + 1));
    this.timer = setInterval(() => void this.renew(), renewMs);
    this.timer.unref();
  }

  get lost(): AbortSignal {
    return this.controller.signal;
  }

  private async renew(): Promise<void> {
    try {
      if ((await this.redis.renewLease(this.key, this.value, this.ttlMs)) === 0 && !(await this.confirm())) this.lose();
    } catch (err) {
      // Keep filling: a Redis outage is not a reason to drop the fill.
      this.failed('lease renewal', err);
    }
  }

  private lose(): void {
    clearInterval(this.timer);
    this.controller.abort(new Error(`the lease on ${this.key} passed to another replica`));
  }

  async confirm(): Promise<boolean> {
    if (this.controller.signal.aborted) return false;
    try {
      return (await this.redis.confirmLease(this.key, this.value, this.ttlMs)) === 1;
    } catch (err) {
      // Unknown: publishing verified bytes under their own digest is safe either way.
      this.failed('lease check', err);
      return true;
    }
  }

  async release(outcome: 'stored' | 'failed'): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    this.done(this);
    await this.redis.releaseLease(this.key, this.value, outcome, STORED_MARK_MS).catch((err: unknown) => this.failed('lease release', err));
  }
}
