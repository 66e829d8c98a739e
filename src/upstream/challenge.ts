/** A parsed `WWW-Authenticate` challenge (RFC 9110 §11.6.1). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y;

/** Parses every challenge in a header; malformed input yields what parsed cleanly. */
export function parseChallenges(header: string | undefined): Challenge[] {
  if (!header) return [];
  const challenges: Challenge[] = [];
  let pos = 0;
  const skip = (): void => {
    while (pos < header.length && (header[pos] === ' ' || header[pos] === '\t' || header[pos] === ',')) pos++;
  };
  const token = (): string | undefined => {
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(header);
    if (!m) return undefined;
    pos = TOKEN.lastIndex;
    return m[0];
  };
  for (let guard = 0; guard < 64 && pos < header.length; guard++) {
    skip();
    const scheme = token();
    if (!scheme) break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    for (let p = 0; p < 64; p++) {
      while (header[pos] === ' ') pos++;
      const save = pos;
      const name = token();
      while (header[pos] === ' ') pos++;
      if (!name || header[pos] !== '=') {
        pos = save; // the next challenge's scheme, or the end
        break;
      }
      pos++;
      while (header[pos] === ' ') pos++;
      let value = '';
      if (header[pos] === '"') {
        pos++;
        while (pos < header.length && header[pos] !== '"') {
          if (header[pos] === '\\' && pos + 1 < header.length) pos++;
          value += header[pos++];
        }
        pos++;
      } else {
        // Unquoted values should be tokens; be lenient and take up to the next comma.
        while (pos < header.length && header[pos] !== ',' && header[pos] !== ' ') value += header[pos++];
      }
      challenge.params[name.toLowerCase()] = value;
      while (header[pos] === ' ') pos++;
      if (header[pos] === ',') pos++;
    }
  }
  return challenges;
}
