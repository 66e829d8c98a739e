import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';

const BCRYPT = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;
/** Compared against when the user does not exist, so timing does not reveal which users do. */
const UNKNOWN_USER_HASH = '$2b$10$qYY6CvmmSk0JwKGG1d36SeOiJvY6rBPA1nQJse7Rn1GHsuWj0zOXG';
/** bcrypt is slow on purpose; more checks than this at once are refused rather than queued. */
const MAX_CHECKS_IN_FLIGHT = 8;
/** Clients send Basic credentials on every request: remember good logins instead of re-hashing. */
const VERDICT_TTL_MS = 5 * 60_000;

export type Verdict = 'ok' | 'rejected' | 'busy';

/** Users and bcrypt hashes from an htpasswd file (`htpasswd -B`); other hash kinds are refused. */
export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = colon > 0 ? line.slice(0, colon) : '';
    const hash = line.slice(colon + 1);
    if (!user) throw new Error(`${file} line ${index + 1}: expected user:hash`);
    if (!BCRYPT.test(hash)) throw new Error(`${file} line ${index + 1}: user "${user}" has no bcrypt hash; create entries with htpasswd -B`);
    users.set(user, hash);
  });
  return users;
}

/** Checks Basic credentials against an htpasswd file, re-read on `reload()` (SIGHUP). */
export class HtpasswdVerifier {
  private users: Map<string, string>;
  private inFlight = 0;
  // Successful logins only, keyed by a hash of user and password so that no password is kept.
  // Failures are not remembered: a flood of wrong passwords cannot push real users out.
  private readonly accepted = new LRUCache<string, true>({ max: 10_000, ttl: VERDICT_TTL_MS });

  constructor(private readonly file: string) {
    this.users = this.read();
  }

  get size(): number {
    return this.users.size;
  }

  /** Re-reads the file; on error the previous users stay in force. */
  reload(): void {
    this.users = this.read();
    this.accepted.clear();
  }

  async verify(user: string, password: string): Promise<Verdict> {
    const hash = this.users.get(user);
    const key = createHash('sha256').update(`${user}\0${password}`).digest('base64');
    if (this.accepted.has(key)) return 'ok';
    if (this.inFlight >= MAX_CHECKS_IN_FLIGHT) return 'busy';
    this.inFlight++;
    try {
      const matches = await bcrypt.compare(password, hash ?? UNKNOWN_USER_HASH);
      if (!matches || hash === undefined) return 'rejected';
      this.accepted.set(key, true);
      return 'ok';
    } finally {
      this.inFlight--;
    }
  }

  private read(): Map<string, string> {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read htpasswd file ${this.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    return parseHtpasswd(text, this.file);
  }
}
