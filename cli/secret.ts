import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandSpec } from './args.js';
import { runCommand } from './args.js';
import { PREVIOUS_FILE } from '../hub/keyring.js';
import { loadSecret } from '../hub/secret.js';
import { keyId } from '../protocol/token.js';
import { parseDuration } from './token.js';

export const secretRotateCommand = {
  usage: 'caps secret rotate',
  summary:
    "Replaces the hub's token secret (the secret file in --data) with a new one. Tokens signed with the old one keep working for --grace, then stop, on a running hub too (within a second); mint new ones with caps token meanwhile.",
  flags: {
    grace: { type: 'string', description: 'how long tokens of the old secret are still accepted, e.g. 12h, 7d, or 0s for not at all', placeholder: 'DURATION', default: '7d' },
    data: { type: 'string', description: "the hub's data folder, where its secret file lives", placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
  },
  examples: ['caps secret rotate', 'caps secret rotate --grace 24h --data /var/lib/caps'],
} as const satisfies CommandSpec;

export function runSecret(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'rotate') {
    const help = sub === '--help' || sub === '-h' || sub === 'help';
    (help ? process.stdout : process.stderr).write(`Usage: caps secret rotate [flags]\n\n${secretRotateCommand.summary}\n\nRun 'caps secret rotate --help' for its flags.\n`);
    return Promise.resolve(help ? 0 : 2);
  }
  return runCommand(secretRotateCommand, rest, async (flags) => {
    if (process.env['CAPS_SECRET']) {
      process.stderr.write('caps secret rotate: the secret comes from CAPS_SECRET: rotate it there (set CAPS_SECRET_PREVIOUS to the old value while its tokens are still to work)\n');
      return 1;
    }
    const grace = parseDuration(flags.grace);
    if (grace === undefined) {
      process.stderr.write(`caps secret rotate: --grace must look like 3600s, 90m, 12h or 7d; got '${flags.grace}'\nRun 'caps secret rotate --help' to see the flags.\n`);
      return 2;
    }
    const { secret: old, source } = loadSecret(flags.data);
    const until = new Date(Date.now() + grace * 1000).toISOString();
    const fresh = randomBytes(32).toString('hex');
    const file = join(flags.data, 'secret');
    // the old key first, then the new one, each written whole and renamed into place: a hub reading
    // meanwhile sees the old secret, or the new one with the old as previous, never half a file
    writePrivate(join(flags.data, PREVIOUS_FILE), `${JSON.stringify({ secret: old, until })}\n`);
    writePrivate(file, `${fresh}\n`);
    process.stdout.write(`${keyId(fresh)}\n`);
    process.stderr.write(
      `caps secret rotate: new secret in ${source} (key ${keyId(fresh)}); tokens of the old key ${keyId(old)} are accepted until ${until}. ` +
        `Mint new tokens with caps token --data ${flags.data}.\n`,
    );
    return 0;
  });
}

function writePrivate(file: string, text: string): void {
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, text, { mode: 0o600, flag: 'wx' });
  renameSync(temp, file);
}
