import type { Logger } from '../log.js';
import { CircuitBreaker, type BreakerOptions, type CircuitState } from './circuit-breaker.js';
import { parseRateLimit, type RateLimit } from './rate-limit.js';
import type { ResponseHeaders } from './endpoint-client.js';

export interface EndpointSnapshot {
  url: string;
  /** up: answering; down: failing but still tried; open: skipped until the backoff ends. */
  state: 'up' | 'down' | 'open';
  circuit: CircuitState;
  consecutiveFailures: number;
  openUntil: number | undefined;
  latencyMs: number | undefined;
  lastError: { message: string; at: number } | undefined;
  /** Whose budget the rate limit is: the configured username, or anonymous. */
  credential: string;
  rateLimit: RateLimit | undefined;
  /** Manifest GETs this mirror sent: what counts against Docker Hub's pull quota. */
  manifestGets: number;
  requests: number;
}

export interface RateLimitPolicy {
  warnBelow: number;
  minRemaining: number;
}

/**
 * The budget as every replica of a cluster last saw it for this endpoint and
 * credential: one account, one budget, whichever replica spent it.
 */
export interface SharedBudget {
  /** Tells the other replicas; kept for the budget's window. */
  publish(rate: { remaining: number; limit?: number; windowSeconds?: number }, windowMs: number): void;
  /** The latest report of any replica within its window, without a round trip. */
  read(): { remaining: number } | undefined;
}

/** What an endpoint's state reports as it changes (for notifications); a listener never throws. */
export interface EndpointEvents {
  /** The circuit opened (its first opening; not the 'still down' reminders). */
  circuitOpened?(e: { endpoint: string; failures: number; reason: string }): void;
  /** The endpoint answered again after its circuit had opened. */
  circuitClosed?(e: { endpoint: string; downMs: number }): void;
  /** The pull budget fell under rateLimit.warnBelow. `credential` is never the user name. */
  budgetLow?(e: { endpoint: string; credential: 'anonymous' | 'configured'; remaining: number; limit?: number; windowSeconds?: number }): void;
}

const MANIFEST_PATH = /\/manifests\/[^/]+$/;
/** An endpoint that stays down is logged again at most this often (failed trials and probes come more often). */
export const STILL_DOWN_LOG_MS = 60_000;

/** What one endpoint looks like from here: circuit, latency, errors, rate-limit budget, quota spent. */
export class EndpointState {
  readonly breaker: CircuitBreaker;
  rateLimit: RateLimit | undefined;
  manifestGets = 0;
  requests = 0;
  latencyMs: number | undefined;
  lastError: { message: string; at: number } | undefined;
  /** When the circuit last opened, while it has not closed since. */
  private downSince: number | undefined;
  private lastDownLog = 0;

  constructor(
    readonly url: string,
    readonly credential: string,
    breaker: BreakerOptions,
    private readonly rateLimitPolicy: RateLimitPolicy,
    private readonly log: Logger,
    private readonly shared?: SharedBudget,
    private readonly events: EndpointEvents = {},
  ) {
    this.breaker = new CircuitBreaker(breaker);
  }

  /** Records a response: latency to headers, rate-limit headers, and manifest GETs spent. */
  observe(method: string, path: string, status: number, headers: ResponseHeaders, ms: number): void {
    this.requests += 1;
    this.latencyMs = this.latencyMs === undefined ? ms : Math.round(this.latencyMs * 0.8 + ms * 0.2);
    // A 401 is the auth handshake, not a pull.
    if (method === 'GET' && status !== 401 && MANIFEST_PATH.test(path.split('?', 1)[0]!)) this.manifestGets += 1;
    const rate = parseRateLimit(headers);
    if (!rate) return;
    const before = this.rateLimit?.remaining;
    this.rateLimit = rate;
    if (rate.remaining !== undefined) {
      this.shared?.publish({ remaining: rate.remaining, limit: rate.limit, windowSeconds: rate.windowSeconds }, (rate.windowSeconds ?? 21_600) * 1000);
    }
    const { warnBelow } = this.rateLimitPolicy;
    if (rate.remaining !== undefined && rate.remaining < warnBelow && (before === undefined || before >= warnBelow)) {
      this.log.warn({ endpoint: this.url, credential: this.credential, remaining: rate.remaining, limit: rate.limit, windowSeconds: rate.windowSeconds }, 'upstream pull budget is running low');
      const credential = this.credential === 'anonymous' ? 'anonymous' : 'configured';
      this.events.budgetLow?.({ endpoint: this.url, credential, remaining: rate.remaining, limit: rate.limit, windowSeconds: rate.windowSeconds });
    }
  }

  /** Whether the last known budget is under minRemaining and still within its window. */
  budgetLow(now = Date.now()): boolean {
    // Another replica's report counts as much as ours: its key expires with the window, so no clocks are compared.
    const shared = this.shared?.read();
    if (shared) return shared.remaining < this.rateLimitPolicy.minRemaining;
    const rate = this.rateLimit;
    if (rate?.remaining === undefined) return false;
    const windowMs = (rate.windowSeconds ?? 21_600) * 1000;
    return now - rate.observedAt < windowMs && rate.remaining < this.rateLimitPolicy.minRemaining;
  }

  success(now = Date.now()): void {
    this.breaker.success();
    if (this.downSince === undefined) return;
    this.log.info({ endpoint: this.url, downMs: now - this.downSince }, 'endpoint answering again: circuit closed');
    this.events.circuitClosed?.({ endpoint: this.url, downMs: now - this.downSince });
    this.downSince = undefined;
  }

  /** Neither success nor failure, for example our own deadline cut it short. */
  inconclusive(): void {
    this.breaker.release();
  }

  failure(message: string, now = Date.now()): void {
    this.lastError = { message, at: now };
    const wasOpen = this.breaker.state !== 'closed';
    this.breaker.failure(now);
    if (this.breaker.state !== 'open') return;
    const fields = { endpoint: this.url, failures: this.breaker.consecutiveFailures, openUntil: new Date(this.breaker.openUntil).toISOString(), err: message };
    if (!wasOpen || this.downSince === undefined) {
      this.downSince = now;
      this.lastDownLog = now;
      this.log.warn(fields, 'endpoint circuit opened');
      this.events.circuitOpened?.({ endpoint: this.url, failures: fields.failures, reason: message });
    } else if (now - this.lastDownLog >= STILL_DOWN_LOG_MS) {
      // Each failed trial or probe would be a line; one a minute says it is still down.
      this.lastDownLog = now;
      this.log.warn({ ...fields, downSince: new Date(this.downSince).toISOString() }, 'endpoint still down');
    }
  }

  snapshot(): EndpointSnapshot {
    const circuit = this.breaker.state;
    return {
      url: this.url,
      state: circuit !== 'closed' ? 'open' : this.breaker.consecutiveFailures > 0 ? 'down' : 'up',
      circuit,
      consecutiveFailures: this.breaker.consecutiveFailures,
      openUntil: circuit === 'closed' ? undefined : this.breaker.openUntil,
      latencyMs: this.latencyMs,
      lastError: this.lastError,
      credential: this.credential,
      rateLimit: this.rateLimit,
      manifestGets: this.manifestGets,
      requests: this.requests,
    };
  }
}
