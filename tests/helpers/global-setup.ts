import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CHROMIUM = '/usr/bin/chromium';

/**
 * Before any test: build `dist/` (the CLI tests run it), and make sure the system tools the
 * suite drives are installed: Debian's chromium for the dashboard test and redis-server (and redis-cli, for the cluster) for the Redis tests (each test
 * starts its own on free ports; the machine's Redis, if any, is never used). Installs each with apt-get
 * when running as root; otherwise fails with the exact command to run. Never skips.
 */
export default function setup(): void {
  execFileSync(process.execPath, [fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url)), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  ensurePackage(CHROMIUM, 'chromium');
  ensurePackage('/usr/bin/redis-server', 'redis-server');
  // the Redis Cluster tests form their cluster with redis-cli --cluster create; Debian's redis-tools, a dependency of redis-server
  ensurePackage('/usr/bin/redis-cli', 'redis-tools');
}

function ensurePackage(binary: string, aptPackage: string): void {
  if (existsSync(binary)) return;
  const command = `apt-get update && apt-get install -y ${aptPackage}`;
  if (process.getuid?.() !== 0) {
    throw new Error(`${binary} is missing and the tests are not running as root to install it. Run: sudo sh -c '${command}'`);
  }
  process.stdout.write(`[test setup] ${binary} is missing: running ${command}\n`);
  try {
    execFileSync('sh', ['-c', `DEBIAN_FRONTEND=noninteractive ${command}`], { stdio: 'inherit', timeout: 15 * 60_000 });
  } catch (err) {
    throw new Error(`installing ${aptPackage} failed; run it yourself: ${command}`, { cause: err });
  }
  if (!existsSync(binary)) throw new Error(`${command} ran but ${binary} is still missing`);
}
