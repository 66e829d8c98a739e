import { Agent, request } from 'undici';
import type { Logger } from '../log.js';
import { assertAllowedTarget, guardedLookup, TargetAllowance } from '../upstream/address-guard.js';
import { envelope, sign, SIGNATURE_HEADER } from './envelope.js';
import { EVENTS_MEDIA_TYPES, type EnvelopeFormat } from './events.js';
import type { Outbox } from './outbox.js';
import type { EndpointStatus } from './status.js';

export interface DeliverySettings {
  name: string;
  url: string;
  allow: readonly string[];
  headers: Record<string, string | string[]>;
  timeoutMs: number;
  threshold: number;
  backoffMs: number;
  maxBackoffMs: number;
  format: EnvelopeFormat;
  secret: string;
  maxEvents: number;
  maxWaitMs: number;
}

/** Idle endpoints look for rows other processes added (stevedore verify) this often. */
const POLL_MS = 1_000;
/** A failing endpoint is logged again at most this often. */
const RELOG_MS = 60_000;
/** What is read of a receiver's answer before the connection is given up. */
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * The URL as logs, the API and the dashboard show it: the origin only. Webhook
 * URLs often carry their token in the path (Slack's do) or the query.
 */
export function displayUrl(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.host}${parsed.pathname === '/' ? '/' : '/…'}`;
}

/** The URL names a loopback, private or link-local address literally, and `allow` does not list it. */
export class ForbiddenEndpointError extends Error {
  constructor(readonly url: string) {
    super(`${displayUrl(url)} is a loopback, private, link-local or metadata address: list it in allow to send events there`);
    this.name = 'ForbiddenEndpointError';
  }
}

/**
 * Delivers one endpoint's events from the outbox: in order, a batch at a time,
 * each batch until a 2xx (at least once), retrying with exponential backoff and
 * jitter. Each endpoint has its own loop and connection pool, so a dead or
 * hanging receiver holds up nothing but its own events.
 */
export class EndpointSender {
  private readonly agent: Agent;
  private readonly headers: Record<string, string | string[]>;
  private readonly shownUrl: string;
  private state: EndpointStatus['state'] = 'idle';
  private delivered = 0;
  private failedAttempts = 0;
  private dropped = 0;
  private consecutiveFailures = 0;
  private lastSuccessAt: number | undefined;
  private lastFailure: { at: number; message: string } | undefined;
  private nextAttemptAt: number | undefined;
  private lastFailureLog = 0;
  private droppedUnlogged = 0;
  private lastDropLog = 0;
  private stopped = false;
  private inFlight: AbortController | undefined;
  private wakeUp: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly settings: DeliverySettings,
    private readonly outbox: Outbox,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {
    const allowance = new TargetAllowance('', settings.allow);
    try {
      assertAllowedTarget(new URL(settings.url), allowance);
    } catch {
      throw new ForbiddenEndpointError(settings.url);
    }
    this.shownUrl = displayUrl(settings.url);
    this.agent = new Agent({
      connect: { lookup: guardedLookup(allowance), timeout: settings.timeoutMs },
      headersTimeout: settings.timeoutMs,
      bodyTimeout: settings.timeoutMs,
      connections: 2,
    });
    this.headers = { ...lowerCased(settings.headers), 'content-type': EVENTS_MEDIA_TYPES[settings.format], 'user-agent': 'stevedore-notifications' };
  }

  start(): void {
    this.loop ??= this.run().catch((err: unknown) => {
      // Not reached: every turn of the loop catches its own failures. Said loudly if it ever is.
      this.log.error({ endpoint: this.settings.name, err: (err as Error).message }, 'notification delivery stopped');
    });
  }

  /** New rows are in the outbox. */
  wake(): void {
    this.wakeUp?.();
  }

  /** Counts events the outbox dropped for lack of room, and says so at most once a minute. */
  droppedOldest(count: number, now = Date.now()): void {
    this.dropped += count;
    this.droppedUnlogged += count;
    if (now - this.lastDropLog < RELOG_MS) return;
    this.lastDropLog = now;
    this.log.warn({ endpoint: this.settings.name, dropped: this.droppedUnlogged, droppedSinceStart: this.dropped, pending: this.outbox.pending(this.settings.name) }, 'notification outbox full for this endpoint: oldest events dropped');
    this.droppedUnlogged = 0;
  }

  status(): EndpointStatus {
    return {
      name: this.settings.name,
      url: this.shownUrl,
      state: this.state,
      pending: this.outbox.pending(this.settings.name),
      delivered: this.delivered,
      failedAttempts: this.failedAttempts,
      dropped: this.dropped,
      consecutiveFailures: this.consecutiveFailures,
      lastSuccessAt: this.lastSuccessAt,
      lastFailure: this.lastFailure,
      nextAttemptAt: this.state === 'retrying' ? this.nextAttemptAt : undefined,
    };
  }

  /** Stops after the attempt in flight (cut short: its events stay in the outbox for the next start). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.inFlight?.abort();
    this.wake();
    await this.loop;
    await this.agent.close().catch(() => undefined);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let delay: number | undefined;
      try {
        delay = await this.turn();
      } catch (err) {
        // The outbox could not be read or written (a full disk, a lock held too long): retried like a failed attempt.
        this.outbox.release(this.settings.name);
        this.state = 'retrying';
        delay = this.failed(`outbox: ${(err as Error).message}`, 0);
      }
      if (delay !== undefined) await this.pause(delay, { ignoreWake: true });
    }
  }

  /** One step: wait for events, or send a batch. Returns the backoff after a failed attempt. */
  private async turn(): Promise<number | undefined> {
    const { name, maxEvents, maxWaitMs } = this.settings;
    const taken = this.outbox.take(name, maxEvents);
    if (!taken) {
      this.state = 'idle';
      await this.pause(POLL_MS);
      if (!this.stopped) this.outbox.recount(name);
      return undefined;
    }
    this.state = 'sending';
    // A batch goes when it is full or its oldest event has waited maxWait; meanwhile more may come.
    // A negative age is a clock stepped back: send rather than wait for it to catch up.
    const age = Date.now() - taken.recordedAt;
    if (!taken.full && age >= 0 && age < maxWaitMs) {
      this.outbox.release(name);
      await this.pause(maxWaitMs - age);
      return undefined;
    }
    const failure = await this.send(taken.events);
    if (failure === undefined) {
      this.outbox.acknowledge(name, taken);
      this.succeeded(taken.events.length);
      return undefined;
    }
    this.outbox.release(name);
    if (this.stopped) return undefined;
    this.state = 'retrying';
    return this.failed(failure, taken.events.length);
  }

  /** Sends one batch; undefined on a 2xx, else why not. */
  private async send(events: string[]): Promise<string | undefined> {
    const body = envelope(events);
    const headers = { ...this.headers, 'stevedore-event-count': String(events.length), ...(this.settings.secret ? { [SIGNATURE_HEADER]: sign(this.settings.secret, body) } : {}) };
    const controller = new AbortController();
    this.inFlight = controller;
    const deadline = setTimeout(() => controller.abort(), this.settings.timeoutMs);
    try {
      const answer = await request(this.settings.url, { method: 'POST', body, headers, dispatcher: this.agent, signal: controller.signal });
      await answer.body.dump({ limit: MAX_ANSWER_BYTES }).catch(() => undefined);
      if (answer.statusCode >= 200 && answer.statusCode < 300) return undefined;
      return `answered ${answer.statusCode}`;
    } catch (err) {
      if (controller.signal.aborted) return this.stopped ? 'stopped' : `no answer within ${this.settings.timeoutMs} ms`;
      const cause = (err as Error & { cause?: Error }).cause;
      return (cause ?? (err as Error)).message || (err as Error).name;
    } finally {
      clearTimeout(deadline);
      this.inFlight = undefined;
    }
  }

  private succeeded(count: number, now = Date.now()): void {
    this.delivered += count;
    if (this.consecutiveFailures > 0) {
      this.log.info({ endpoint: this.settings.name, url: this.shownUrl, failedAttempts: this.consecutiveFailures, downMs: this.lastFailure ? now - this.lastFailure.at : undefined }, 'notification endpoint answering again');
    }
    this.consecutiveFailures = 0;
    this.lastSuccessAt = now;
  }

  /** Records a failed attempt; returns how long to wait before the next. */
  private failed(message: string, batch: number, now = Date.now()): number {
    this.failedAttempts += 1;
    this.consecutiveFailures += 1;
    this.lastFailure = { at: now, message };
    const { threshold, backoffMs, maxBackoffMs } = this.settings;
    const doublings = Math.max(0, this.consecutiveFailures - threshold);
    const ceiling = Math.min(maxBackoffMs, backoffMs * 2 ** Math.min(doublings, 30));
    // Equal jitter: endpoints (and replicas) that failed together do not retry together.
    const delay = Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
    this.nextAttemptAt = now + delay;
    if (this.consecutiveFailures === 1 || now - this.lastFailureLog >= RELOG_MS) {
      this.lastFailureLog = now;
      const fields = { endpoint: this.settings.name, url: this.shownUrl, err: message, batch, pending: this.outbox.pending(this.settings.name), failedAttempts: this.consecutiveFailures, retryInMs: delay };
      this.log.warn(fields, this.consecutiveFailures === 1 ? 'notification delivery failed; retrying' : 'notification endpoint still failing');
    }
    return delay;
  }

  /** Waits `ms`, or less when woken (new rows) or stopped. */
  private pause(ms: number, options: { ignoreWake?: boolean } = {}): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(1, ms));
      const stoppedCheck = (): void => {
        if (this.stopped || !options.ignoreWake) done();
      };
      this.wakeUp = stoppedCheck;
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    }).finally(() => {
      this.wakeUp = undefined;
    });
  }
}

function lowerCased(headers: Record<string, string | string[]>): Record<string, string | string[]> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
}
