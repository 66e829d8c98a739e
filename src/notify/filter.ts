import { ACTIONS, type Action, type MirrorEvent } from './events.js';

export interface FilterSettings {
  /** Action names, or prefixes ending in `.*`. */
  actions: readonly string[];
  mediaTypes: readonly string[];
  /** Leave out pulls served from the cache. */
  hits: boolean;
}

const FROM_CACHE = new Set(['hit', 'coalesced', 'stale']);

/** An action pattern no event could ever match: a typo that would silently send everything. */
export class UnknownActionError extends Error {
  constructor(readonly pattern: string) {
    super(`"${pattern}" matches no action (${ACTIONS.join(', ')})`);
    this.name = 'UnknownActionError';
  }
}

/** Whether one endpoint wants an event: its ignore lists and hits switch. */
export class EventFilter {
  private readonly actions = new Set<Action>();
  private readonly mediaTypes: Set<string>;

  constructor(private readonly settings: FilterSettings) {
    for (const pattern of settings.actions) {
      const matched = ACTIONS.filter((action) => pattern === '*' || action === pattern || (pattern.endsWith('.*') && action.startsWith(pattern.slice(0, -1))));
      if (matched.length === 0) throw new UnknownActionError(pattern);
      for (const action of matched) this.actions.add(action);
    }
    this.mediaTypes = new Set(settings.mediaTypes);
  }

  /** Whether a pull with this outcome could pass (media types aside): the request log skips building the rest. */
  wantsPull(outcome: string): boolean {
    return !this.actions.has('pull') && !(this.settings.hits && FROM_CACHE.has(outcome));
  }

  wants(event: MirrorEvent): boolean {
    if (this.actions.has(event.action)) return false;
    if (event.target?.mediaType !== undefined && this.mediaTypes.has(event.target.mediaType)) return false;
    if (this.settings.hits && event.action === 'pull' && FROM_CACHE.has(String(event.detail?.outcome))) return false;
    return true;
  }
}
