// Tests that need a tool or a privilege this machine may lack (dockerd, root,
// Chromium, inotify…). On a developer's machine a missing one skips the test,
// and the run's summary says loudly what did not run. With CI set (CI runs
// `.ci/run` with CI=true) it fails the test instead: CI is never green
// without the real clients having run.
import { test, type TestContext } from 'node:test';

/** Whether this run is CI's: any value of CI but "" and "false". */
export const IN_CI = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

/** The marker scripts/run-tests.sh collects into its summary of what did not run. */
export const NOT_RUN = 'NOT RUN:';

type Body = (t: TestContext) => void | Promise<void>;

export interface Requirement {
  /** Why the suite cannot run here, or undefined when it can. */
  readonly missing: string | undefined;
  /** Declares a test that runs only when the requirement is met. */
  test(name: string, body: Body): void;
  test(name: string, options: { timeout?: number }, body: Body): void;
}

/**
 * A requirement named `what` (such as "dockerd"), unmet for `missing`
 * (a reason) or met (undefined / null). Its tests skip locally when unmet,
 * and fail under CI.
 */
export function requirement(what: string, missing: string | null | undefined): Requirement {
  const reason = missing ?? undefined;
  const declare = (name: string, options: { timeout?: number }, body: Body): void => {
    if (reason === undefined) {
      test(name, options, body);
    } else if (IN_CI) {
      test(name, options, () => {
        throw new Error(`${what} is required and missing: ${reason}. With CI set, a suite that cannot run fails instead of skipping.`);
      });
    } else {
      test(name, { ...options, skip: `${NOT_RUN} ${what}: ${reason}` }, body);
    }
  };
  return {
    missing: reason,
    test(name: string, optionsOrBody: { timeout?: number } | Body, maybeBody?: Body): void {
      if (typeof optionsOrBody === 'function') declare(name, {}, optionsOrBody);
      else declare(name, optionsOrBody, maybeBody!);
    },
  };
}

/** Finds an executable on PATH (no hard-coded locations); undefined when there is none. */
export async function onPath(names: readonly string[]): Promise<string | undefined> {
  const { access, constants } = await import('node:fs/promises');
  const { join } = await import('node:path');
  for (const name of names) {
    for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
      const candidate = join(dir, name);
      if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
    }
  }
  return undefined;
}

/**
 * The Chromium to drive: $CHROME_PATH when set, else the one playwright-core
 * manages (when it was installed), else the first chromium on PATH (Debian's
 * `chromium` package).
 */
export async function findChromium(): Promise<string | undefined> {
  const { existsSync } = await import('node:fs');
  if (process.env.CHROME_PATH) return existsSync(process.env.CHROME_PATH) ? process.env.CHROME_PATH : undefined;
  const { chromium } = await import('playwright-core');
  let managed: string | undefined;
  try {
    managed = chromium.executablePath();
  } catch {
    managed = undefined; // no browser of playwright's own
  }
  if (managed && existsSync(managed)) return managed;
  return onPath(['chromium', 'chromium-browser', 'google-chrome-stable', 'google-chrome']);
}
