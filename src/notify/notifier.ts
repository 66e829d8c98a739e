import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import { displayUrl, EndpointSender, ForbiddenEndpointError, type DeliverySettings } from './delivery.js';
import { serializeEvent, type EventSource } from './envelope.js';
import type { MirrorEvent } from './events.js';
import { EventFilter, UnknownActionError, type FilterSettings } from './filter.js';
import { Outbox, type Chunk } from './outbox.js';
import type { NotificationsStatus } from './status.js';

export interface NotifierEndpoint extends DeliverySettings {
  filter: FilterSettings;
  disabled: boolean;
}

export interface NotifierOptions {
  endpoints: readonly NotifierEndpoint[];
  /** Rows kept per endpoint; beyond, the oldest go. */
  maxPending: number;
  outboxPath: string;
  fileMode?: number;
  source: EventSource;
  log: Logger;
  /** Recorded events are written to the outbox together this often. */
  flushIntervalMs?: number;
}

/** A key of one endpoint's settings is wrong in a way the schema cannot see. */
export class EndpointSettingsError extends Error {
  constructor(
    readonly index: number,
    readonly key: string,
    message: string,
  ) {
    super(message);
    this.name = 'EndpointSettingsError';
  }
}

const FLUSH_MS = 100;
/** Events held in memory while the outbox cannot be written; beyond, the oldest are lost (and counted). */
const MAX_BUFFERED = 50_000;
const RELOG_MS = 60_000;

interface Recorded {
  event: MirrorEvent;
  at: number;
  /** Serialized at the first flush that took it: a flush retried after a failure sends the same id. */
  body?: string;
}

interface Route {
  name: string;
  maxEvents: number;
  filter: EventFilter;
  sender: EndpointSender | undefined;
}

/**
 * The mirror's parts record events here; they are written to the durable
 * outbox together, off the request path (a hit costs an array push), and each
 * endpoint's sender delivers its own rows. Without endpoints it records nothing.
 */
export class Notifier {
  private readonly routes: Route[];
  private readonly outbox: Outbox | undefined;
  private buffer: Recorded[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private recorded = 0;
  /** Events that never reached the outbox: the buffer overflowed while it could not be written, or it was still failing at stop. */
  private lost = 0;
  private stopping: Promise<void> | undefined;
  private lastFlushErrorLog = 0;
  private started = false;
  private closed = false;

  private source: EventSource;

  constructor(private readonly options: NotifierOptions) {
    this.source = options.source;
    this.routes = options.endpoints.map((endpoint, index) => ({ name: endpoint.name, maxEvents: endpoint.maxEvents, filter: filterFor(endpoint, index), sender: undefined }));
    const active = options.endpoints.filter((e) => !e.disabled);
    if (active.length === 0) {
      this.outbox = undefined;
      return;
    }
    this.outbox = new Outbox(options.outboxPath, options.fileMode);
    try {
      options.endpoints.forEach((endpoint, index) => {
        if (endpoint.disabled) return;
        try {
          this.routes[index]!.sender = new EndpointSender(endpoint, this.outbox!, options.log);
        } catch (err) {
          if (err instanceof ForbiddenEndpointError) throw new EndpointSettingsError(index, 'url', err.message);
          throw err;
        }
      });
    } catch (err) {
      this.outbox.close();
      throw err;
    }
  }

  /** Who the events say sent them, once the server knows the port it listens on. */
  setSource(source: EventSource): void {
    this.source = source;
  }

  /** Whether any endpoint takes events: sources may skip building them otherwise. */
  get enabled(): boolean {
    return this.outbox !== undefined;
  }

  /** Whether some endpoint takes pull events of this outcome: with hits ignored everywhere, a hit builds no event. */
  wantsPull(outcome: string): boolean {
    return this.routes.some((route) => route.sender !== undefined && route.filter.wantsPull(outcome));
  }

  /** Never throws and never waits: the event is written with the next flush. */
  record(event: MirrorEvent): void {
    if (!this.outbox) return;
    this.recorded += 1;
    if (this.closed) {
      // A fill that ended after the drain, say: there is no outbox left to take it.
      this.lost += 1;
      return;
    }
    this.buffer.push({ event, at: Date.now() });
    if (this.buffer.length > MAX_BUFFERED) {
      // Only while the outbox cannot be written: the oldest tenth goes at once, not one per event.
      const excess = Math.ceil(MAX_BUFFERED / 10);
      this.buffer.splice(0, excess);
      this.lost += excess;
    }
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), this.options.flushIntervalMs ?? FLUSH_MS);
      this.flushTimer.unref();
    }
  }

  /** Writes what was recorded to the outbox in one transaction, and wakes the senders. */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (!this.outbox || this.buffer.length === 0 || this.closed) return;
    // One chunk per endpoint and flush (split at its batch size): a row, not a row per event.
    const chunks = new Map<Route, Chunk[]>();
    for (const item of this.buffer) {
      for (const route of this.routes) {
        if (!route.sender || !route.filter.wants(item.event)) continue;
        const body = (item.body ??= serializeEvent(item.event, randomUUID(), item.at, this.source));
        const at = item.at;
        let list = chunks.get(route);
        if (!list) chunks.set(route, (list = []));
        let last = list.at(-1);
        if (!last || last.events.length >= route.maxEvents) list.push((last = { endpoint: route.name, events: [], recordedAt: at }));
        (last.events as string[]).push(body);
      }
    }
    const rows = [...chunks.values()].flat();
    try {
      // Only the delivering process trims: it knows which batch is in flight (stevedore verify only adds).
      const dropped = this.outbox.append(rows, this.started ? this.options.maxPending : Number.MAX_SAFE_INTEGER);
      this.buffer = [];
      for (const [name, count] of dropped) this.routes.find((r) => r.name === name)?.sender?.droppedOldest(count);
    } catch (err) {
      // Kept for the next flush (the buffer is bounded); a full or broken disk is said once a minute.
      const now = Date.now();
      if (now - this.lastFlushErrorLog >= RELOG_MS) {
        this.lastFlushErrorLog = now;
        this.options.log.error({ err: (err as Error).message, buffered: this.buffer.length, lost: this.lost }, 'could not write events to the notification outbox; retrying');
      }
      this.flushTimer = setTimeout(() => this.flush(), 1_000);
      this.flushTimer.unref();
      return;
    }
    for (const route of this.routes) route.sender?.wake();
  }

  start(): void {
    if (this.started || this.closed || !this.outbox) return;
    this.started = true;
    const names = this.routes.map((r) => r.name);
    const forgotten = this.outbox.forgetOthers(names);
    if (forgotten > 0) this.options.log.warn({ events: forgotten, endpoints: names }, 'notification events of endpoints no longer configured deleted from the outbox');
    for (const route of this.routes) route.sender?.start();
  }

  /** Writes what is recorded, stops the senders (an attempt in flight is cut short and retried at the next start) and closes the outbox. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.flush();
      this.closed = true;
      clearTimeout(this.flushTimer);
      if (this.buffer.length > 0) {
        this.lost += this.buffer.length;
        this.options.log.error({ lost: this.buffer.length }, 'notification events could not be written to the outbox before stopping: lost');
        this.buffer = [];
      }
      await Promise.all(this.routes.map((r) => r.sender?.stop()));
      this.outbox?.close();
    })();
    return this.stopping;
  }

  status(): NotificationsStatus {
    return {
      recorded: this.recorded,
      lost: this.lost,
      endpoints: this.routes.map((route, index) => {
        if (route.sender) return route.sender.status();
        const endpoint = this.options.endpoints[index]!;
        return { name: endpoint.name, url: displayUrl(endpoint.url), state: 'disabled', pending: this.outbox?.pending(endpoint.name) ?? 0, delivered: 0, failedAttempts: 0, dropped: 0, consecutiveFailures: 0 };
      }),
    };
  }
}

function filterFor(endpoint: NotifierEndpoint, index: number): EventFilter {
  try {
    return new EventFilter(endpoint.filter);
  } catch (err) {
    if (err instanceof UnknownActionError) throw new EndpointSettingsError(index, `ignore.actions.${endpoint.filter.actions.indexOf(err.pattern)}`, err.message);
    throw err;
  }
}
