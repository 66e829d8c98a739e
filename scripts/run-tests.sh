#!/bin/sh
# Runs every test file under test/ with Node's test runner. Files are listed
# explicitly: Node 20 does not expand ** globs, and sh would treat ** as *.
set -eu
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.test.json
files=$(find test -name '*.test.ts' | sort)
# Tests that start daemons or servers share ports and disk; run files one at a time.
# Every test is bounded: a hang fails that test instead of the whole run.
exec node --import tsx --test --test-concurrency=1 --test-timeout=300000 --test-reporter=tap $files
