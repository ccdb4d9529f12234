import type { CommandSpec } from './args.js';
import { runCommand, UsageError } from './args.js';
import { loadSecret } from '../hub/secret.js';
import type { TokenSubject } from '../protocol/token.js';
import { peekClaims, signToken } from '../protocol/token.js';
import { REVOKED_FILE, REVOKED_STAKES } from '../hub/keyring.js';
import { checkPrivateFile, prepareDataFolder } from '../hub/data-folder.js';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { nameSchema, orderSchema, storeNameSchema } from '../protocol/schemas.js';
import { trackingUrl } from '../hub/tracking.js';

export const tokenCommand = {
  usage: 'caps token',
  summary:
    "Mints a token signed with the hub's secret (CAPS_SECRET, or the secret file in --data). Prints the token alone on stdout, and when it expires on stderr (30 days unless --expires-in says otherwise). With --track: a customer's tracking link for one parcel; the link (<url>/track/<token>) alone on stdout, the token and when it expires on stderr.",
  flags: {
    role: { type: 'choice', description: 'what the token allows (tracker: see --track)', choices: ['vendor', 'driver', 'dashboard', 'tracker'] },
    track: { type: 'boolean', description: "a tracking link for one parcel (--store and --order): it opens that parcel's page and nothing else" },
    store: { type: 'string', description: "the vendor's store (required for vendor and --track); limits a dashboard to one store", placeholder: 'NAME' },
    order: { type: 'string', description: 'with --track: the orderId of the parcel', placeholder: 'ID' },
    url: { type: 'string', description: "with --track: where customers reach the hub (its public URL)", placeholder: 'URL', default: 'http://127.0.0.1:3000', env: 'CAPS_PUBLIC_URL' },
    name: { type: 'string', description: "the driver's name (required for driver)", placeholder: 'NAME' },
    'expires-in': { type: 'string', description: "lifetime, e.g. 3600s, 90m, 12h, 30d, or 'never'; when it expires is printed on stderr", placeholder: 'DURATION', default: '30d' },
    data: { type: 'string', description: "the hub's data folder, where its secret file lives", placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
  },
  examples: [
    'caps token --role vendor --store acme-widgets',
    'caps token --role driver --name d1 --expires-in 12h',
    'caps token --track --store acme-widgets --order 1042 --url https://track.example.com',
    'CAPS_TOKEN=$(caps token --role vendor --store acme-widgets) caps vendor',
  ],
} as const satisfies CommandSpec;

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400 };

/** `3600s`, `90m`, `12h`, `30d` in seconds; undefined when it is none of those. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match?.[1] || !match[2]) return undefined;
  return Number(match[1]) * (UNITS[match[2]] ?? 1);
}

export const revokeCommand = {
  usage: 'caps token revoke',
  summary:
    'Revokes one token by its id (printed by caps token) or the token itself: the hub refuses it from then on and drops connected clients using it within a second. Tokens minted before token ids existed can only be revoked by caps secret rotate.',
  flags: {
    id: { type: 'string', description: 'the token id to revoke (16 hex characters)', placeholder: 'ID' },
    token: { type: 'string', description: 'the token to revoke (its id and expiry are read from it)', placeholder: 'TOKEN' },
    data: { type: 'string', description: "the hub's data folder, where the list of revoked tokens lives", placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
  },
  examples: ['caps token revoke --id 3f9c2a1b7d4e8f60', 'caps token revoke --token "$CAPS_TOKEN"'],
} as const satisfies CommandSpec;

export function runToken(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'revoke') return runRevoke(argv.slice(1));
  return runCommand(tokenCommand, argv, async (flags) => {
    if (flags.track && flags.role !== undefined && flags.role !== 'tracker') throw new UsageError(`--track makes a tracking link; it cannot be a ${flags.role} token`);
    const role = flags.track ? 'tracker' : flags.role;
    if (flags.order !== undefined && role !== 'tracker') throw new UsageError('--order is for --track: the parcel a tracking link opens');
    let subject: TokenSubject;
    switch (role) {
      case 'vendor':
        if (!flags.store) throw new UsageError('--role vendor needs --store NAME');
        if (flags.name) throw new UsageError('--name is for drivers; a vendor token names a --store');
        subject = { role: 'vendor', store: flags.store };
        break;
      case 'driver':
        if (!flags.name) throw new UsageError('--role driver needs --name NAME');
        if (flags.store) throw new UsageError('--store is for vendors and dashboards; a driver token names a --name');
        subject = { role: 'driver', name: flags.name };
        break;
      case 'dashboard':
        if (flags.name) throw new UsageError('--name is for drivers');
        subject = flags.store ? { role: 'dashboard', store: flags.store } : { role: 'dashboard' };
        break;
      case 'tracker': {
        if (!flags.store || flags.order === undefined) throw new UsageError('--track needs --store NAME and --order ID: the one parcel it opens');
        if (flags.name) throw new UsageError('--name is for drivers; a tracking link names a --store and an --order');
        const orderId = orderSchema.shape.orderId.safeParse(flags.order);
        if (!orderId.success) throw new UsageError(`--order '${flags.order}' ${orderId.error.issues[0]?.message ?? 'is not a valid orderId'}`);
        subject = { role: 'tracker', store: flags.store, orderId: orderId.data };
        break;
      }
      default:
        throw new UsageError('--role is required: vendor, driver or dashboard (or --track for a tracking link)');
    }
    let base: URL | undefined;
    if (role === 'tracker') {
      base = URL.canParse(flags.url) ? new URL(flags.url) : undefined;
      if (!base || (base.protocol !== 'http:' && base.protocol !== 'https:')) throw new UsageError(`--url must be the hub's public http(s) URL, e.g. https://track.example.com; got '${flags.url}'`);
    }
    if (flags.store !== undefined) {
      const parsed = storeNameSchema.safeParse(flags.store);
      if (!parsed.success) throw new UsageError(`--store '${flags.store}' ${parsed.error.issues[0]?.message ?? 'is not a valid store name'}`);
    }
    if (flags.name !== undefined) {
      const parsed = nameSchema.safeParse(flags.name);
      if (!parsed.success) throw new UsageError(`--name '${flags.name}' ${parsed.error.issues[0]?.message ?? 'is not a valid name'}`);
    }
    let expiresInSeconds: number | undefined;
    if (flags['expires-in'] !== 'never') {
      expiresInSeconds = parseDuration(flags['expires-in']);
      if (expiresInSeconds === undefined) throw new UsageError(`--expires-in must look like 3600s, 90m, 12h, 30d or never; got '${flags['expires-in']}'`);
      if (expiresInSeconds <= 0) throw new UsageError('--expires-in must be more than zero');
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
    const token = signToken(secret, subject, expiresInSeconds !== undefined ? { expiresInSeconds, now } : { now });
    const iat = Math.floor(now / 1000);
    const claims = peekClaims(token);
    const id = `id ${claims?.jti ?? '?'} (caps token revoke --id ${claims?.jti ?? '?'}), key ${claims?.kid ?? '?'}`;
    if (base && subject.role === 'tracker') {
      // the link is what a shop sends its customer: alone on stdout, for LINK=$(caps token --track ...)
      process.stdout.write(`${trackingUrl(base.href, token)}\n`);
      process.stderr.write(`caps token: tracking link for parcel ${subject.orderId} of ${subject.store}; its token: ${token}\n`);
    } else {
      process.stdout.write(`${token}\n`);
    }
    process.stderr.write(
      expiresInSeconds !== undefined
        ? `caps token: expires ${new Date((iat + expiresInSeconds) * 1000).toISOString()} (--expires-in ${flags['expires-in']}); ${id}\n`
        : `caps token: never expires (--expires-in never); ${id}\n`,
    );
    return 0;
  });
}

function runRevoke(argv: readonly string[]): Promise<number> {
  return runCommand(revokeCommand, argv, async (flags) => {
    if ((flags.id === undefined) === (flags.token === undefined)) throw new UsageError('name the token to revoke: --id ID or --token TOKEN (one of them)');
    let id = flags.id;
    let until = 'never';
    if (flags.token !== undefined) {
      const claims = peekClaims(flags.token);
      if (!claims) throw new UsageError('--token is not a CAPS token');
      if (claims.jti === undefined) throw new UsageError('this token has no id (minted before tokens had one): only caps secret rotate can retire it');
      id = claims.jti;
      // remembered until the token would expire anyway: the list does not grow for ever
      if (claims.exp !== undefined) until = new Date(claims.exp * 1000).toISOString();
    }
    if (id === undefined || !/^[a-f0-9]{16}$/.test(id)) throw new UsageError(`--id must be a token id of 16 hex characters (caps token prints it); got '${id ?? ''}'`);
    prepareDataFolder(flags.data);
    const file = join(flags.data, REVOKED_FILE);
    appendFileSync(file, `${id} ${until}\n`, { mode: 0o600 });
    // a list the hub will not read (open to others, another user's) would revoke nothing: say so now
    try {
      checkPrivateFile(file, REVOKED_STAKES);
    } catch (err) {
      process.stderr.write(`caps token revoke: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
    process.stderr.write(`caps token revoke: token ${id} is revoked${until === 'never' ? '' : ` (remembered until it would have expired, ${until})`}; a running hub drops clients using it within a second\n`);
    return 0;
  });
}
