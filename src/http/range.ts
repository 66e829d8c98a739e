import parseRange from 'range-parser';
import type { ByteRange } from '../oci/byte-range.js';
import { rangeNotSatisfiable } from '../oci/errors.js';

/**
 * The single byte range a client asked for (RFC 9110 §14), clipped to the size.
 * Malformed or multi-range headers are ignored (a 200 is always allowed);
 * an unsatisfiable range throws 416.
 */
export function requestedRange(header: string | undefined, size: number): ByteRange | undefined {
  if (!header) return undefined;
  // RFC 9110 §14.1.2: a suffix longer than the representation selects all of it.
  const suffix = /^bytes=\s*-(\d+)\s*$/.exec(header);
  if (suffix && size > 0 && Number(suffix[1]) >= size) return { start: 0, end: size - 1 };
  const ranges = parseRange(size, header, { combine: true });
  if (ranges === -1) throw rangeNotSatisfiable(size);
  if (ranges === -2 || ranges.type !== 'bytes' || ranges.length !== 1) return undefined;
  const [range] = ranges;
  return range ? { start: range.start, end: range.end } : undefined;
}
