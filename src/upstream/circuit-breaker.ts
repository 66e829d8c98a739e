export interface BreakerOptions {
  /** Consecutive failures that open the circuit. */
  failureThreshold: number;
  /** First open period; it doubles on every failed trial up to openMaxMs. */
  openMinMs: number;
  openMaxMs: number;
}

export type CircuitState = 'closed' | 'open' | 'half-open';

/**
 * Passive health of one endpoint: after N consecutive failures it is skipped
 * for a growing backoff, then one request is let through as a trial.
 */
export class CircuitBreaker {
  state: CircuitState = 'closed';
  consecutiveFailures = 0;
  openUntil = 0;
  private backoffMs: number;
  private trialInFlight = false;

  constructor(private readonly options: BreakerOptions) {
    this.backoffMs = options.openMinMs;
  }

  /** Whether a request may go to this endpoint now; in half-open, only one at a time. */
  tryAcquire(now = Date.now()): boolean {
    if (this.state === 'closed') return true;
    if (this.state === 'open') {
      if (now < this.openUntil) return false;
      this.state = 'half-open';
      this.trialInFlight = false;
    }
    if (this.trialInFlight) return false;
    this.trialInFlight = true;
    return true;
  }

  /** The request ended without telling us anything about health (cancelled by us): free the trial. */
  release(): void {
    this.trialInFlight = false;
  }

  success(): void {
    this.state = 'closed';
    this.consecutiveFailures = 0;
    this.trialInFlight = false;
    this.backoffMs = this.options.openMinMs;
  }

  failure(now = Date.now()): void {
    this.consecutiveFailures += 1;
    if (this.state === 'half-open') {
      this.backoffMs = Math.min(this.backoffMs * 2, this.options.openMaxMs);
      this.open(now);
    } else if (this.state === 'closed' && this.consecutiveFailures >= this.options.failureThreshold) {
      this.open(now);
    }
  }

  private open(now: number): void {
    this.state = 'open';
    this.trialInFlight = false;
    this.openUntil = now + this.backoffMs;
  }
}
