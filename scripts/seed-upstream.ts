// Seeds a registry with the standard test images and prints a JSON summary.
// Usage: tsx scripts/seed-upstream.ts http://127.0.0.1:PORT
import { seedStandard, summarize } from '../test/support/seed-standard.js';

async function main(): Promise<void> {
  const url = process.argv[2];
  if (!url || !/^https?:\/\//.test(url)) {
    process.stderr.write('usage: tsx scripts/seed-upstream.ts http://127.0.0.1:PORT\n');
    process.exitCode = 2;
    return;
  }
  const seeded = await seedStandard(url);
  process.stdout.write(JSON.stringify({ registry: url, ...summarize(seeded) }, null, 2) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`seed-upstream failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
