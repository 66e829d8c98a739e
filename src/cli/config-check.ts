import { stringify } from 'yaml';
import type { Config } from '../config/schema.js';

/** Keys whose values are secrets: shown as set or not, never printed. */
const SECRET_KEY = /password|secret|token$/i;

/** The effective config as YAML, secrets masked, for `stevedore config check`. */
export function describeConfig(config: Config): string {
  return stringify(mask(config), { lineWidth: 0 });
}

function mask(value: unknown, key = ''): unknown {
  // Webhook headers carry tokens (Authorization); the values of every header are masked.
  if (key === 'headers' && value && typeof value === 'object') return Object.fromEntries(Object.keys(value).map((name) => [name, '<set>']));
  if (typeof value === 'string') {
    if (value !== '' && SECRET_KEY.test(key)) return '<set>';
    return maskUrlPassword(value);
  }
  if (Array.isArray(value)) return value.map((item) => mask(item));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mask(v, k)]));
  return value;
}

/** A URL's password (a proxy's or Redis's, say) is a secret too, and so is its query (webhook tokens). */
function maskUrlPassword(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/:@]*:)[^/@]*@/i, '$1xxxxx@').replace(/^([a-z][a-z0-9+.-]*:\/\/[^?\s]*)\?\S*$/i, '$1?<set>');
}
