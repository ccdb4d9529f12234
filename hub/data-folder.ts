import { chmodSync, lstatSync, mkdirSync, readlinkSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { userInfo } from 'node:os';
import Database from 'better-sqlite3';

/**
 * The data folder holds the token secret (whoever reads or replaces it can forge any token) and
 * caps.sqlite (customers' names and addresses). The hub makes what it creates there private, and
 * refuses to start on what it finds there that others could have read, written or planted.
 */

/** Why the hub will not use its data folder or a file in it; the message names the path and the fix. */
export class DataFolderError extends Error {
  override readonly name = 'DataFolderError';

  constructor(
    message: string,
    /** The folder or file found wanting. */
    readonly path: string,
  ) {
    super(message);
  }
}

/**
 * Creates the data folder (and any missing folders above it) 0700, or checks the one found:
 * refused if another user owns it or group or others may write to it (they could swap the secret or
 * the database for their own). One an older version made 0755 is accepted: others may look at the
 * names in it, but its files are private.
 */
export function prepareDataFolder(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    // a file where the folder should be: said below, with the fix
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // stat, not lstat: a data folder may be a symbolic link an administrator made (to another disk);
  // whoever could change that link could also change the folder above it, which is theirs to guard
  const stats = statSync(dir);
  if (!stats.isDirectory()) {
    throw new DataFolderError(`the data folder ${dir} is not a folder; fix: mv ${quote(dir)} ${quote(`${dir}.old`)}, or choose another with --data`, dir);
  }
  if (!checksPermissions()) return;
  checkOwner(dir, stats, true);
  const writable = stats.mode & 0o022;
  if (writable !== 0) {
    throw new DataFolderError(
      `the data folder ${dir} is ${openTo(writable)} (mode ${octal(stats.mode)}): others could replace the token secret or the database in it; fix: chmod 700 ${quote(dir)}`,
      dir,
    );
  }
}

/** What a refusal says about a file: what others could do with it, and what removing it costs. */
export interface FileStakes {
  /** Follows "whoever may read or write it", e.g. `can forge any token`. */
  risk: string;
  /** What happens once the file is removed, e.g. `a new secret is made on the next start`. */
  removed: string;
}

/**
 * Refuses a file in the data folder that is a symbolic link, not a regular file, owned by another
 * user, or readable or writable by group or others. `undefined` when there is none.
 * Checked with lstat, then read by name: no one else can swap it in between, since
 * prepareDataFolder has made sure no one else may write to the folder.
 */
export function checkPrivateFile(file: string, stakes: FileStakes): Stats | undefined {
  let stats: Stats;
  try {
    stats = lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (stats.isSymbolicLink()) {
    const target = readLink(file);
    throw new DataFolderError(`${file} is a symbolic link${target ? ` (to ${target})` : ''}: whoever may change what it points to ${stakes.risk}; fix: rm ${quote(file)} (${stakes.removed})`, file);
  }
  if (!stats.isFile()) {
    throw new DataFolderError(`${file} is not a regular file (${kindOf(stats)}); fix: mv ${quote(file)} ${quote(`${file}.old`)} (${stakes.removed})`, file);
  }
  if (!checksPermissions()) return stats;
  checkOwner(file, stats, false);
  const open = stats.mode & 0o066;
  if (open !== 0) {
    // once read, chmod does not take it back: say how to start afresh too
    const readable = (open & 0o044) !== 0 ? `, and rm ${quote(file)} if someone may have read it (${stakes.removed})` : '';
    throw new DataFolderError(`${file} is ${openTo(open)} (mode ${octal(stats.mode)}): whoever may read or write it ${stakes.risk}; fix: chmod 600 ${quote(file)}${readable}`, file);
  }
  return stats;
}

/**
 * chmod 600 each of `files` that exists. For files another program creates in the data folder with
 * its own mode (SQLite's 0644): setting the process's umask instead would change every file the
 * process makes, anywhere.
 */
export function makePrivate(files: readonly string[]): void {
  if (!checksPermissions()) return;
  for (const file of files) {
    try {
      chmodSync(file, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

/** Windows has neither POSIX modes nor uids (process.geteuid is undefined there): its ACLs are the administrator's. */
function checksPermissions(): boolean {
  return process.platform !== 'win32' && process.geteuid !== undefined;
}

function checkOwner(path: string, stats: Stats, folder: boolean): void {
  // the effective uid: the one that owns the files the hub creates (the same as getuid unless setuid)
  const uid = process.geteuid?.();
  if (uid === undefined || stats.uid === uid) return;
  const me = userName(uid);
  const chown = `${uid === 0 ? '' : 'sudo '}chown ${folder ? '-R ' : ''}${me} ${quote(path)}`;
  throw new DataFolderError(`${folder ? 'the data folder ' : ''}${path} belongs to uid ${stats.uid}, not to ${me} (uid ${uid}) running CAPS: that user could change it; fix: ${chown}`, path);
}

/** `readable by group and others`, `writable by group, readable by others`... for group and other bits of `mode`. */
function openTo(mode: number): string {
  const what = (bits: number): string => [bits & 0o4 ? 'readable' : '', bits & 0o2 ? 'writable' : ''].filter(Boolean).join(' and ');
  const group = what(mode >> 3);
  const others = what(mode);
  if (group === others) return `${group} by group and others`;
  return [group ? `${group} by group` : '', others ? `${others} by others` : ''].filter(Boolean).join(', ');
}

function octal(mode: number): string {
  return (mode & 0o777).toString(8);
}

function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a named pipe';
  if (stats.isSocket()) return 'a socket';
  return 'a device';
}

function readLink(file: string): string | undefined {
  try {
    return readlinkSync(file);
  } catch {
    return undefined;
  }
}

function userName(uid: number): string {
  try {
    return userInfo().username;
  } catch {
    // no entry in the password database (a container's arbitrary uid): chown takes the number
    return String(uid);
  }
}

/** A path as a POSIX shell reads it back, for the fix commands in the messages. */
function quote(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\\''")}'`;
}

/**
 * Opens (creating) a database file and makes it 0600 before anything is written to it. SQLite
 * creates it 0644; the -wal and -shm files it makes next take the database file's mode (its
 * os_unix.c does so whatever the umask; tests/data-folder.test.ts checks it). Those a killed hub of
 * an older version left 0644 are made private here too.
 */
export function openPrivate(file: string): Database.Database {
  const db = new Database(file);
  try {
    makePrivate([file, `${file}-wal`, `${file}-shm`]);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}
