import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { checkPrivateFile } from '../hub/data-folder.js';
import { loadSecret } from '../hub/secret.js';
import { SqliteStorage } from '../hub/storage/sqlite-storage.js';
import { signToken } from '../protocol/token.js';
import type { CliResult } from './helpers/cli.js';
import { killAllCli, runCli, startCli } from './helpers/cli.js';

/**
 * The hardening issue's finding 4, "the data folder trusts what it finds": a secret someone else
 * could read, write or point elsewhere lets them forge any token, and caps.sqlite holds customers'
 * names and addresses. The hub makes its folder and files private, and refuses to start on ones
 * that are not.
 */
const LISTENING = /listening on (http:\/\/\S+)/;
const SECRET = 'a-planted-secret-0123456789abcdef';
/** `nobody` on Linux: some uid that is not ours, for files owned by someone else. */
const OTHER_UID = 65534;
/** Only root can give a file away (chown): the ownership checks are tested when the suite runs as root. */
const IS_ROOT = process.getuid?.() === 0;
const ME = userInfo().username;

const dirs: string[] = [];
const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  await killAllCli();
  for (const thing of open.splice(0)) await thing.close();
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

  it('stops on a world-writable data folder with CAPS_SECRET too: the SQLite storage keeps parcels there', async () => {
    const data = tempDir();
    chmodSync(data, 0o777);
    const result = await runCli(hubArgs(data), { env: { CAPS_SECRET: SECRET } });
    const line = expectOneLineRefusal(result, 'caps hub: ');
    expect(line).toContain(`chmod 700 ${data}`);
  });

  it('makes a new data folder 0700 and its secret and caps.sqlite* files 0600, once it has taken a pickup', async () => {
    const data = join(tempDir(), 'data');
    const hub = startCli(hubArgs(data), { CAPS_SECRET: undefined });
    const [line] = await hub.stdout.waitFor(LISTENING, 'the hub to report where it listens');
    const url = LISTENING.exec(line ?? '')?.[1] ?? '';
    const token = signToken(readFileSync(join(data, 'secret'), 'utf8').trim(), { role: 'vendor', store: 'acme' });
    const res = await fetch(`${url}/pickup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ store: 'acme', orderId: 'acme-1', customer: 'Ada Lovelace', address: '12 Private Lane' }),
    });
    // answered once the pickup is committed to caps-journal.sqlite
    expect(res.status, await res.text()).toBe(201);

    expect(modeOf(data)).toBe(0o700);
    const files = readdirSync(data).sort();
    // the -wal and -shm files are SQLite's own, made after the hub made the database files private
    expect(files).toEqual(['caps-journal.sqlite', 'caps-journal.sqlite-shm', 'caps-journal.sqlite-wal', 'caps.sqlite', 'caps.sqlite-shm', 'caps.sqlite-wal', 'secret', 'webhooks.sqlite', 'webhooks.sqlite-shm', 'webhooks.sqlite-wal']);
    for (const name of files) expect({ name, mode: modeOf(join(data, name)).toString(8) }).toEqual({ name, mode: '600' });
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

  // root makes a file and a folder of another user with chown; anyone else finds root's own
  it('refuses a secret another user owns, saying to chown it', () => {
    if (IS_ROOT) {
      const { data, file } = folderWithSecret(0o600);
      chownSync(file, OTHER_UID, OTHER_UID);
      expect(() => loadSecret(data, env)).toThrow(`${file} belongs to uid ${OTHER_UID}`);
      expect(() => loadSecret(data, env)).toThrow(`chown ${ME} ${file}`);
    } else {
      expect(() => checkPrivateFile('/etc/passwd', { risk: 'can forge any token', removed: 'a new one is made' })).toThrow('/etc/passwd belongs to uid 0');
    }
  });

  it('refuses a data folder another user owns', () => {
    const data = IS_ROOT ? folderWithSecret(0o600).data : '/';
    if (IS_ROOT) chownSync(data, OTHER_UID, OTHER_UID);
    const owner = IS_ROOT ? OTHER_UID : 0;
    expect(() => loadSecret(data, env)).toThrow(`${data} belongs to uid ${owner}`);
    expect(() => loadSecret(data, env)).toThrow(`chown -R ${ME} ${data}`);
  });

  it('with CAPS_SECRET, neither reads nor checks the folder (a hub with memory or Redis storage never uses it)', () => {
    const data = tempDir();
    chmodSync(data, 0o777);
    symlinkSync('/etc/hostname', join(data, 'secret'));
    expect(loadSecret(data, { CAPS_SECRET: SECRET })).toEqual({ secret: SECRET, source: 'CAPS_SECRET' });
  });
});

describe('the SQLite storage files', () => {
  it('relies on SQLite giving -wal and -shm the database file\'s mode, whatever the umask', () => {
    const dir = tempDir();
    const file = join(dir, 'plain.sqlite');
    const db = new Database(file);
    open.push(db);
    chmodSync(file, 0o600);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
    expect(process.umask() & 0o077).not.toBe(0o077); // else this would prove nothing
    expect(modeOf(`${file}-wal`)).toBe(0o600);
    expect(modeOf(`${file}-shm`)).toBe(0o600);
  });

  it('makes the files an older version left 0644 (a hub killed with its -wal and -shm on disk) 0600, in a 0755 folder', async () => {
    const dir = tempDir();
    chmodSync(dir, 0o755);
    const first = new SqliteStorage({ dir });
    await first.close();
    // another connection holds the WAL open, as a killed hub leaves it behind
    const left = new Database(join(dir, 'caps-journal.sqlite'));
    open.push(left);
    left.prepare('SELECT count(*) FROM journal').get();
    const names = ['caps.sqlite', 'caps-journal.sqlite', 'caps-journal.sqlite-wal', 'caps-journal.sqlite-shm'];
    for (const name of names) chmodSync(join(dir, name), 0o644);

    const storage = new SqliteStorage({ dir });
    open.push(storage);
    expect(modeOf(dir)).toBe(0o755);
    for (const name of names) expect({ name, mode: modeOf(join(dir, name)).toString(8) }).toEqual({ name, mode: '600' });
  });

  it('refuses a folder others may write to, naming the fix', () => {
    const dir = tempDir();
    chmodSync(dir, 0o775);
    expect(() => new SqliteStorage({ dir })).toThrow(`${dir} is writable by group (mode 775)`);
    expect(readdirSync(dir)).toEqual([]);
  });
});
