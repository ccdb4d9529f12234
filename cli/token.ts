import type { CommandSpec } from './args.js';
import { runCommand } from './args.js';
import { loadSecret } from '../hub/secret.js';
import type { TokenSubject } from '../protocol/token.js';
import { signToken } from '../protocol/token.js';
import { nameSchema, storeNameSchema } from '../protocol/schemas.js';

export const tokenCommand = {
  usage: 'caps token',
  summary: "Mints a token signed with the hub's secret (CAPS_SECRET, or the secret file in --data). Prints the token alone on stdout, and when it expires on stderr (30 days unless --expires-in says otherwise).",
  flags: {
    role: { type: 'choice', description: 'what the token allows', choices: ['vendor', 'driver', 'dashboard'] },
    store: { type: 'string', description: "the vendor's store (required for vendor); limits a dashboard to one store", placeholder: 'NAME' },
    name: { type: 'string', description: "the driver's name (required for driver)", placeholder: 'NAME' },
    'expires-in': { type: 'string', description: "lifetime, e.g. 3600s, 90m, 12h, 30d, or 'never'; when it expires is printed on stderr", placeholder: 'DURATION', default: '30d' },
    data: { type: 'string', description: "the hub's data folder, where its secret file lives", placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
  },
  examples: [
    'caps token --role vendor --store acme-widgets',
    'caps token --role driver --name d1 --expires-in 12h',
    'CAPS_TOKEN=$(caps token --role vendor --store acme-widgets) caps vendor',
  ],
} as const satisfies CommandSpec;

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400 };

export function runToken(argv: readonly string[]): Promise<number> {
  return runCommand(tokenCommand, argv, async (flags) => {
    const problem = (text: string): number => {
      process.stderr.write(`caps token: ${text}\nRun 'caps token --help' to see the flags.\n`);
      return 2;
    };
    let subject: TokenSubject;
    switch (flags.role) {
      case 'vendor':
        if (!flags.store) return problem('--role vendor needs --store NAME');
        if (flags.name) return problem('--name is for drivers; a vendor token names a --store');
        subject = { role: 'vendor', store: flags.store };
        break;
      case 'driver':
        if (!flags.name) return problem('--role driver needs --name NAME');
        if (flags.store) return problem('--store is for vendors and dashboards; a driver token names a --name');
        subject = { role: 'driver', name: flags.name };
        break;
      case 'dashboard':
        if (flags.name) return problem('--name is for drivers');
        subject = flags.store ? { role: 'dashboard', store: flags.store } : { role: 'dashboard' };
        break;
      default:
        return problem('--role is required: vendor, driver or dashboard');
    }
    if (flags.store !== undefined) {
      const parsed = storeNameSchema.safeParse(flags.store);
      if (!parsed.success) return problem(`--store '${flags.store}' ${parsed.error.issues[0]?.message ?? 'is not a valid store name'}`);
    }
    if (flags.name !== undefined) {
      const parsed = nameSchema.safeParse(flags.name);
      if (!parsed.success) return problem(`--name '${flags.name}' ${parsed.error.issues[0]?.message ?? 'is not a valid name'}`);
    }
    let expiresInSeconds: number | undefined;
    if (flags['expires-in'] !== 'never') {
      const match = /^(\d+)([smhd])$/.exec(flags['expires-in']);
      if (!match?.[1] || !match[2]) return problem(`--expires-in must look like 3600s, 90m, 12h, 30d or never; got '${flags['expires-in']}'`);
      expiresInSeconds = Number(match[1]) * (UNITS[match[2]] ?? 1);
      if (expiresInSeconds <= 0) return problem('--expires-in must be more than zero');
    }
    let secret: string;
    try {
      ({ secret } = loadSecret(flags.data));
    } catch (err) {
      // a secret the hub would refuse (or cannot read): one line with the fix, as caps hub says it
      process.stderr.write(`caps token: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
    const now = Date.now();
    process.stdout.write(`${signToken(secret, subject, expiresInSeconds !== undefined ? { expiresInSeconds, now } : { now })}\n`);
    const iat = Math.floor(now / 1000);
    process.stderr.write(
      expiresInSeconds !== undefined
        ? `caps token: expires ${new Date((iat + expiresInSeconds) * 1000).toISOString()} (--expires-in ${flags['expires-in']})\n`
        : 'caps token: never expires (--expires-in never); only a new secret revokes it\n',
    );
    return 0;
  });
}
