import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadSecret } from '../hub/secret.js';
import type { CliResult } from './helpers/cli.js';
import { killAllCli, runCli } from './helpers/cli.js';

/**
 * The hardening issue's finding 4, "the data folder trusts what it finds": a secret someone else
 * could read, write or point elsewhere lets them forge any token, and caps.sqlite holds customers'
 * names and addresses. The hub makes its folder and files private, and refuses to start on ones
 * that are not.
 */
const SECRET = 'a-planted-secret-0123456789abcdef';
/** `nobody` on Linux: some uid that is not ours, for files owned by someone else. */
const OTHER_UID = 65534;
/** Only root can give a file away (chown): the ownership checks are tested when the suite runs as root. */
const IS_ROOT = process.getuid?.() === 0;
const ME = userInfo().username;

const dirs: string[] = [];
afterEach(async () => {
  await killAllCli();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A new private folder under the system's temporary folder (mkdtemp makes it 0700). */
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'caps-data-'));
  dirs.push(dir);
  return dir;
}

function modeOf(path: string): number {
  return statSync(path).mode & 0o777;
}

/** A data folder holding a secret file with `mode`, as a careless setup or an older version left it. */
function folderWithSecret(mode: number): { data: string; file: string } {
  const data = tempDir();
  const file = join(data, 'secret');
  writeFileSync(file, `${SECRET}\n`);
  chmodSync(file, mode);
  return { data, file };
}

function hubArgs(data: string, ...more: string[]): string[] {
  return ['hub', '--port', '0', '--host', '127.0.0.1', '--data', data, ...more];
}

/** The CLI said one line on stderr, no stack trace, and exited 1. */
function expectOneLineRefusal(result: CliResult, prefix: string): string {
  expect(result.code, result.output).toBe(1);
  const lines = result.stderr.trim().split('\n');
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^${prefix}`));
  expect(result.stderr).not.toMatch(/^\s+at /m);
  return lines[0] ?? '';
}

describe('caps hub refuses a data folder it cannot trust', () => {
  it('stops on a secret that is a symbolic link (to a public file), saying to remove it', async () => {
    const data = tempDir();
    const planted = join(tempDir(), 'public-secret');
    writeFileSync(planted, `${SECRET}\n`, { mode: 0o644 });
    const file = join(data, 'secret');
    symlinkSync(planted, file);
    const result = await runCli(hubArgs(data), { env: { CAPS_SECRET: undefined } });
    const line = expectOneLineRefusal(result, 'caps hub: ');
    expect(line).toContain(`${file} is a symbolic link`);
    expect(line).toContain(`rm ${file}`);
  });

  it('stops on a world-readable secret, saying chmod 600', async () => {
    const { data, file } = folderWithSecret(0o644);
    const result = await runCli(hubArgs(data), { env: { CAPS_SECRET: undefined } });
    const line = expectOneLineRefusal(result, 'caps hub: ');
    expect(line).toContain(`${file} is readable by group and others`);
    expect(line).toContain(`chmod 600 ${file}`);
  });

  it('stops on a world-writable data folder, saying chmod 700', async () => {
    const { data } = folderWithSecret(0o600);
    chmodSync(data, 0o777);
    const result = await runCli(hubArgs(data), { env: { CAPS_SECRET: undefined } });
    const line = expectOneLineRefusal(result, 'caps hub: ');
    expect(line).toContain(`${data} is writable by group and others`);
    expect(line).toContain(`chmod 700 ${data}`);
  });

});

describe('caps token refuses the same secrets', () => {
  it('says what is wrong in one line and exits 1, without a stack trace', async () => {
    const { data, file } = folderWithSecret(0o640);
    const result = await runCli(['token', '--data', data, '--role', 'dashboard'], { env: { CAPS_SECRET: undefined } });
    const line = expectOneLineRefusal(result, 'caps token: ');
    expect(line).toContain(`${file} is readable by group`);
    expect(line).toContain(`chmod 600 ${file}`);
    expect(result.stdout).toBe('');
  });
});

describe('loadSecret', () => {
  const env = {};

  it('creates a missing data folder 0700 (and the folders above it) and the secret 0600', () => {
    const data = join(tempDir(), 'var', 'caps');
    const { secret, source } = loadSecret(data, env);
    expect(source).toBe(join(data, 'secret'));
    expect(secret).toMatch(/^[0-9a-f]{64}$/);
    expect(modeOf(data)).toBe(0o700);
    expect(modeOf(join(data, '..'))).toBe(0o700);
    expect(modeOf(join(data, 'secret'))).toBe(0o600);
    expect(loadSecret(data, env).secret).toBe(secret);
  });

  it('accepts a folder an older version made 0755 (writable by its owner only) with a 0600 secret', () => {
    const { data, file } = folderWithSecret(0o600);
    chmodSync(data, 0o755);
    expect(loadSecret(data, env)).toEqual({ secret: SECRET, source: file });
  });

  it('refuses a data folder that is a file, saying to move it away', () => {
    const data = join(tempDir(), 'data');
    writeFileSync(data, 'not a folder\n');
    expect(() => loadSecret(data, env)).toThrow(`the data folder ${data} is not a folder; fix: mv ${data} ${data}.old`);
  });

  it('refuses a symbolic link, even to a private file', () => {
    const data = tempDir();
    const target = join(data, 'elsewhere');
    writeFileSync(target, `${SECRET}\n`, { mode: 0o600 });
    const file = join(data, 'secret');
    symlinkSync(target, file);
    expect(() => loadSecret(data, env)).toThrow(`${file} is a symbolic link (to ${target})`);
  });

  it('refuses a secret that is not a regular file, saying to move it away', () => {
    const data = tempDir();
    const file = join(data, 'secret');
    mkdirSync(file, { mode: 0o700 });
    expect(() => loadSecret(data, env)).toThrow(new RegExp(`${file} is not a regular file .*mv ${file} ${file}\\.old`));
  });

  it.each([
    ['640', 'readable by group'],
    ['604', 'readable by others'],
    ['620', 'writable by group'],
    ['602', 'writable by others'],
    ['666', 'readable and writable by group and others'],
  ])('refuses a secret with mode %s: %s', (mode, what) => {
    const { data, file } = folderWithSecret(parseInt(mode, 8));
    expect(() => loadSecret(data, env)).toThrow(`${file} is ${what} (mode ${mode})`);
    expect(() => loadSecret(data, env)).toThrow(`chmod 600 ${file}`);
  });

  it.each([
    ['770', 'writable by group'],
    ['703', 'writable by others'],
  ])('refuses a data folder with mode %s: %s', (mode, what) => {
    const { data } = folderWithSecret(0o600);
    chmodSync(data, parseInt(mode, 8));
    expect(() => loadSecret(data, env)).toThrow(`${data} is ${what} (mode ${mode})`);
    expect(() => loadSecret(data, env)).toThrow(`chmod 700 ${data}`);
  });

  it.skipIf(!IS_ROOT)('refuses a secret another user owns, saying to chown it (needs root to set up)', () => {
    const { data, file } = folderWithSecret(0o600);
    chownSync(file, OTHER_UID, OTHER_UID);
    expect(() => loadSecret(data, env)).toThrow(`${file} belongs to uid ${OTHER_UID}`);
    expect(() => loadSecret(data, env)).toThrow(`chown ${ME} ${file}`);
  });

  it.skipIf(!IS_ROOT)('refuses a data folder another user owns (needs root to set up)', () => {
    const { data } = folderWithSecret(0o600);
    chownSync(data, OTHER_UID, OTHER_UID);
    expect(() => loadSecret(data, env)).toThrow(`${data} belongs to uid ${OTHER_UID}`);
    expect(() => loadSecret(data, env)).toThrow(`chown -R ${ME} ${data}`);
  });

  it('with CAPS_SECRET, neither reads nor checks the folder (a hub with memory or Redis storage never uses it)', () => {
    const data = tempDir();
    chmodSync(data, 0o777);
    symlinkSync('/etc/hostname', join(data, 'secret'));
    expect(loadSecret(data, { CAPS_SECRET: SECRET })).toEqual({ secret: SECRET, source: 'CAPS_SECRET' });
  });
});
