import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LRUCache } from 'lru-cache';
import { Piscina } from 'piscina';
import type { BcryptTask } from './bcrypt-worker.js';

const BCRYPT = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;
/** The worker's file beside this one: .ts when run from the sources, .js when built. */
const WORKER = new URL(`./bcrypt-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url).href;
/** Checks waiting for a worker; beyond this, logins are refused rather than queued. */
const MAX_QUEUED_CHECKS = 64;
/** Checks one client address may have under way at once. */
const CHECKS_PER_CLIENT = 2;
/** Clients send Basic credentials on every request: remember good logins instead of re-hashing. */
const VERDICT_TTL_MS = 5 * 60_000;

export type Verdict = { result: 'ok' } | { result: 'rejected' } | { result: 'busy' } | { result: 'locked'; retryAfterSeconds: number };

/** Users and bcrypt hashes from an htpasswd file (`htpasswd -B`); other hash kinds are refused. */
export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = colon > 0 ? line.slice(0, colon) : '';
    const hash = line.slice(colon + 1);
    if (!user) throw new Error(`${file} line ${index + 1}: expected user:hash`);
    if (!BCRYPT.test(hash)) throw new Error(`${file} line ${index + 1}: user "${user}" has no bcrypt hash; create entries with htpasswd -B`);
    users.set(user, hash);
  });
  return users;
}

export interface LoginLimits {
  /** Failed logins one client address may make per window; beyond, its logins are refused without a check. 0: no limit. */
  maxFailures: number;
  failureWindowMs: number;
}

/** A clock in milliseconds; tests pass their own. */
export interface Clock {
  now(): number;
}

/**
 * Checks Basic credentials against an htpasswd file, re-read on `reload()`
 * (SIGHUP). bcrypt runs on a worker thread, so checks never stall the event
 * loop; a client address gets a bounded share of the checks and a bounded
 * number of failures, so a flood of bad logins cannot lock real users out.
 */
export class HtpasswdVerifier {
  private users: Map<string, string>;
  /** Compared against for unknown users, at the cost of the file's own entries. */
  private dummy: Promise<string>;
  private readonly pool = new Piscina<BcryptTask, boolean | string>({
    filename: WORKER,
    minThreads: 0,
    maxThreads: Math.max(1, Math.floor(availableParallelism() / 2)),
    idleTimeout: 60_000,
  });
  /** Checks under way per client address. */
  private readonly inFlight = new Map<string, number>();
  /** Failed logins per client address, counted from the first one in the window. */
  private readonly failures: LRUCache<string, number>;
  // Successful logins only, keyed by a hash of user and password so that no password is kept,
  // refreshed on use so a user pulling steadily never needs a new check.
  // Failures are not remembered here: a flood of wrong passwords cannot push real users out.
  private readonly accepted: LRUCache<string, true>;
  /** Password checks run so far. */
  checks = 0;

  constructor(
    private readonly file: string,
    private readonly limits: LoginLimits,
    clock: Clock = performance,
  ) {
    this.users = this.read();
    this.dummy = this.makeDummy();
    this.accepted = new LRUCache({ max: 10_000, ttl: VERDICT_TTL_MS, updateAgeOnGet: true, perf: clock, ttlResolution: 0 });
    this.failures = new LRUCache({ max: 100_000, ttl: Math.max(1, limits.failureWindowMs), perf: clock, ttlResolution: 0 });
  }

  get size(): number {
    return this.users.size;
  }

  /** Re-reads the file; on error the previous users stay in force. */
  reload(): void {
    this.users = this.read();
    this.dummy = this.makeDummy();
    this.accepted.clear();
  }

  async verify(user: string, password: string, client: string): Promise<Verdict> {
    const key = createHash('sha256').update(`${user}\0${password}`).digest('base64');
    if (this.accepted.get(key)) return { result: 'ok' };
    const failed = this.failures.get(client) ?? 0;
    if (this.limits.maxFailures > 0 && failed >= this.limits.maxFailures) {
      return { result: 'locked', retryAfterSeconds: Math.max(1, Math.ceil(this.failures.getRemainingTTL(client) / 1000)) };
    }
    const running = this.inFlight.get(client) ?? 0;
    if (running >= CHECKS_PER_CLIENT || this.pool.queueSize >= MAX_QUEUED_CHECKS) return { result: 'busy' };
    this.inFlight.set(client, running + 1);
    this.checks += 1;
    try {
      const hash = this.users.get(user);
      const matches = (await this.pool.run({ op: 'compare', password, hash: hash ?? (await this.dummy) })) === true;
      if (!matches || hash === undefined) {
        this.failures.set(client, (this.failures.get(client) ?? 0) + 1, { noUpdateTTL: true });
        return { result: 'rejected' };
      }
      this.accepted.set(key, true);
      return { result: 'ok' };
    } finally {
      const left = (this.inFlight.get(client) ?? 1) - 1;
      if (left <= 0) this.inFlight.delete(client);
      else this.inFlight.set(client, left);
    }
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }

  /** The bcrypt cost unknown users are checked at: the highest in the file. */
  async dummyCost(): Promise<number> {
    return Number((await this.dummy).slice(4, 6));
  }

  /** A hash of a random password at the highest cost in the file, so unknown users take as long as known ones. */
  private makeDummy(): Promise<string> {
    const costs = [...this.users.values()].map((hash) => Number(hash.slice(4, 6)));
    const cost = costs.length > 0 ? Math.max(...costs) : 10;
    const made = this.pool.run({ op: 'hash', password: randomBytes(18).toString('base64'), cost }) as Promise<string>;
    made.catch(() => undefined); // a failure shows when a check awaits it
    return made;
  }

  private read(): Map<string, string> {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read htpasswd file ${this.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    return parseHtpasswd(text, this.file);
  }
}
