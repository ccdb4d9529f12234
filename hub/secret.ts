import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FileStakes } from './data-folder.js';
import { checkPrivateFile, DataFolderError, prepareDataFolder } from './data-folder.js';

/** What the refusals say is at stake with the secret file. */
const STAKES: FileStakes = { risk: 'can forge any token', removed: 'a new secret is made on the next start; tokens signed with the old one stop working' };

/**
 * The hub's token secret: `CAPS_SECRET` when set, else a random secret kept in `<data>/secret`
 * (created on first use, 0600 in a 0700 folder), shared by `caps hub` and `caps token`.
 *
 * Throws a DataFolderError, naming the path and the command that fixes it, when the secret file is
 * a symbolic link, not a regular file, owned by another user, or open to group or others, or when
 * the data folder is owned by another user or writable by group or others.
 *
 * With CAPS_SECRET the folder is neither created nor checked here: with memory or Redis storage
 * the hub never uses it, and the SQLite storage checks it itself when it keeps parcels there.
 */
export function loadSecret(dataDir: string, env: NodeJS.ProcessEnv = process.env): { secret: string; source: string } {
  const fromEnv = env['CAPS_SECRET'];
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.length < 16) throw new Error('CAPS_SECRET must be at least 16 characters');
    return { secret: fromEnv, source: 'CAPS_SECRET' };
  }
  // first the folder: one others may write to lets them swap the file after it was checked
  prepareDataFolder(dataDir);
  const file = join(dataDir, 'secret');
  if (checkPrivateFile(file, STAKES)) return { secret: readSecret(file), source: file };
  const secret = randomBytes(32).toString('hex');
  try {
    // 'wx' (O_EXCL): never follows a symbolic link; if another process created it meanwhile, use theirs
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    return { secret, source: file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    checkPrivateFile(file, STAKES);
    return { secret: readSecret(file), source: file };
  }
}

/** A secret file's secret, trimmed; refused (DataFolderError) when shorter than 16 characters. */
export function readSecret(file: string): string {
  const secret = readFileSync(file, 'utf8').trim();
  if (secret.length < 16) throw new DataFolderError(`the secret in ${file} is shorter than 16 characters: remove the file to have a new one made`, file);
  return secret;
}
