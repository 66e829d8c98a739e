import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface Noted {
  key: string;
  uploadId: string;
}

/**
 * The multipart uploads this instance has open, in a small file beside its
 * index, so that a restart after a crash aborts exactly those and no other
 * instance's. Written whole (temp file and rename) on every change: a few
 * times per fill, never per byte.
 */
export class UploadJournal {
  private readonly path: string;
  private open: Noted[];

  constructor(dir: string) {
    this.path = join(dir, 's3-uploads.json');
    this.open = this.read();
  }

  entries(): Noted[] {
    return [...this.open];
  }

  add(key: string, uploadId: string): void {
    this.open.push({ key, uploadId });
    this.save();
  }

  remove(key: string, uploadId: string): void {
    const before = this.open.length;
    this.open = this.open.filter((n) => n.key !== key || n.uploadId !== uploadId);
    if (this.open.length !== before) this.save();
  }

  clear(): void {
    this.open = [];
    this.save();
  }

  private read(): Noted[] {
    try {
      const parsed: unknown = JSON.parse(readFileSync(this.path, 'utf8'));
      return Array.isArray(parsed) ? parsed.filter((n): n is Noted => typeof n?.key === 'string' && typeof n?.uploadId === 'string') : [];
    } catch {
      return [];
    }
  }

  private save(): void {
    const temp = `${this.path}.tmp`;
    writeFileSync(temp, JSON.stringify(this.open), { mode: 0o600 });
    renameSync(temp, this.path);
  }
}
