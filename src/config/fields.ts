import { isIP } from 'node:net';
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

/** A human string in config (`10m`, `4MiB`) that becomes a number inside. */
export const human = (parse: (text: string) => number | undefined, expected: string) => (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const value = parse(text);
      if (value === undefined) {
        ctx.addIssue({ code: 'custom', message: `expected ${expected}, got "${text}"` });
        return z.NEVER;
      }
      return value;
    });

/** Milliseconds. */
export const duration = human(parseDuration, 'a duration such as 30s, 10m, 6h or 7d');
/** Milliseconds, or undefined to inherit the global value. */
export const optionalDuration = z
  .string()
  .default('')
  .transform((text, ctx) => {
    if (text === '') return undefined;
    const value = parseDuration(text);
    if (value === undefined) ctx.addIssue({ code: 'custom', message: `expected a duration such as 30s, 10m, 6h or 7d, got "${text}"` });
    return value;
  });
/** Bytes. */
export const size = human(parseSize, 'a size such as 4MiB or 50GiB');

/** A host name, an IP address or a CIDR range, as address allowances take them. */
export function isHostOrRange(entry: string): boolean {
  const [address, bits, extra] = entry.split('/');
  if (extra !== undefined || !address) return false;
  const family = isIP(address);
  if (bits !== undefined) return family !== 0 && /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
  return family !== 0 || /^[A-Za-z0-9.-]+$/.test(address);
}
