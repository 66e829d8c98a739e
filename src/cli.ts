#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from './log.js';
import { startStevedore } from './stevedore.js';

const program = new Command()
  .name('stevedore')
  .description('A pull-through caching mirror for OCI and Docker container registries');

program
  .command('serve')
  .description('run the mirror')
  .option('-c, --config <file>', 'config file (default: $STEVEDORE_CONFIG, else ./mirror.yml if present, else built-in defaults)')
  .action(async (options: { config?: string }) => {
    const config = loadOrExit(options.config);
    const log = createLogger(config.logLevel);
    const stevedore = await startStevedore(config, log);
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'shutting down');
      const deadline = setTimeout(() => process.exit(1), 30_000);
      deadline.unref();
      stevedore.close().then(
        () => {
          log.flush();
          process.exit(0);
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });

function loadOrExit(file: string | undefined): ReturnType<typeof loadConfig> {
  try {
    return loadConfig({ file });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`stevedore: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`stevedore: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
