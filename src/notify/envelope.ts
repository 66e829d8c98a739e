import { createHmac } from 'node:crypto';
import type { MirrorEvent } from './events.js';

/** Who sends the events: distribution's `source`. */
export interface EventSource {
  addr: string;
  instanceID: string;
}

/**
 * An event as distribution's receivers read it, serialized once when it is
 * written to the outbox: every endpoint and every retry sends these bytes,
 * with the same id.
 */
export function serializeEvent(event: MirrorEvent, id: string, recordedAt: number, source: EventSource): string {
  const target = event.target;
  // Built field by field, in distribution's order: this runs for every event of a busy mirror.
  const wire: Record<string, unknown> = {
    id,
    timestamp: new Date(recordedAt).toISOString(),
    action: event.action,
    target: target === undefined ? {} : target.size === undefined ? target : { ...target, length: target.size },
    request: event.request,
    actor: event.actor === undefined ? {} : { name: event.actor },
    source,
    stevedore: event.detail,
  };
  return JSON.stringify(wire);
}

/** The envelope around serialized events, without parsing them again. */
export function envelope(serialized: readonly string[]): string {
  return `{"events":[${serialized.join(',')}]}`;
}

/** The header receivers check a signed body against: HMAC-SHA256 of the exact bytes, in hex. */
export const SIGNATURE_HEADER = 'stevedore-signature-256';

export function sign(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}
