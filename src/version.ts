import { readFileSync } from 'node:fs';

/** This Stevedore's version, from the package.json beside src/ and dist/ (the image ships it too). */
export const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
})();
