import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The hub's token secret: `CAPS_SECRET` when set, else a random secret kept in `<data>/secret`
 * (created on first use, readable by its owner only), shared by `caps hub` and `caps token`.
 */
export function loadSecret(dataDir: string, env: NodeJS.ProcessEnv = process.env): { secret: string; source: string } {
  const fromEnv = env['CAPS_SECRET'];
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.length < 16) throw new Error('CAPS_SECRET must be at least 16 characters');
    return { secret: fromEnv, source: 'CAPS_SECRET' };
  }
  const file = join(dataDir, 'secret');
  try {
    const secret = readFileSync(file, 'utf8').trim();
    if (secret.length >= 16) return { secret, source: file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(32).toString('hex');
  try {
    // 'wx': if another process created it meanwhile, use theirs
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    return { secret, source: file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const theirs = readFileSync(file, 'utf8').trim();
    if (theirs.length < 16) throw new Error(`the secret in ${file} is shorter than 16 characters: remove the file to have a new one made`);
    return { secret: theirs, source: file };
  }
}
