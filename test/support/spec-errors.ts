// The distribution-spec's table of error codes, written out here from the spec
// (not imported from the source, so a code added there cannot pass unnoticed).
export const SPEC_TABLE: readonly string[] = [
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN',
  'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS',
];

/** Codes in an error body that the spec's table lacks; none for bodies that are not error JSON. */
export function codesOutsideSpec(body: Buffer): string[] {
  let parsed: { errors?: { code?: unknown }[] };
  try {
    parsed = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown }[] };
  } catch {
    return [];
  }
  if (!Array.isArray(parsed?.errors)) return [];
  return parsed.errors.map((e) => String(e?.code)).filter((code) => !SPEC_TABLE.includes(code));
}

/** Every error body Stevedore sends (its answers carry X-Request-Id) must use the table's codes: throws otherwise. */
export function assertSpecErrorBody(url: string, status: number, headers: Record<string, unknown>, body: Buffer): void {
  if (status < 400 || headers['x-request-id'] === undefined) return;
  const outside = codesOutsideSpec(body);
  if (outside.length > 0) throw new Error(`${status} from ${url} carries error codes outside the distribution-spec's table: ${outside.join(', ')}`);
}
