import { inspect } from 'node:util';

/** Readable lines for a person, or one JSON object per line for a machine. */
export type LogFormat = 'human' | 'json';
export type LogLevel = 'info' | 'warn' | 'error';

export interface Logger {
  /** `EVENT: { event, time, payload }`, the line the course's hub prints for every event. */
  event(event: string, payload: unknown, time?: string): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface LoggerOptions {
  format?: LogFormat;
  /** Where each finished line goes; defaults to stdout. */
  write?: (line: string) => void;
  /** Colour human lines (default: when stdout is a terminal). */
  color?: boolean;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? 'human';
  // EVENT lines, one per parcel step, are gathered per turn; the rest go out at once, in order
  const write = options.write ?? writeStdoutNow;
  const writeEvent = options.write ?? writeStdoutGathered;
  const color = options.color ?? (options.write === undefined && process.stdout.isTTY === true);

  const human = (level: LogLevel, message: string, fields?: Record<string, unknown>): string => {
    const tag = level === 'info' ? '' : `${level.toUpperCase()} `;
    const rest = fields && Object.keys(fields).length > 0 ? ` ${formatFields(fields)}` : '';
    // the message is the hub's own words, so its backslashes stay as they are; its invisible
    // characters are escaped all the same, so that no caller can break or forge a line
    return `${tag}${escapeInvisible(message)}${rest}`;
  };

  const line = (level: LogLevel, message: string, fields?: Record<string, unknown>): void => {
    if (format === 'json') {
      write(escapeInvisible(JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields })));
    } else {
      write(human(level, message, fields));
    }
  };

  return {
    event(event, payload, time = new Date().toISOString()) {
      if (format === 'json') {
        writeEvent(escapeInvisible(JSON.stringify({ time, level: 'info', msg: 'EVENT', event, payload })));
      } else {
        const fast = color ? undefined : plainEvent(event, payload, time);
        // inspect escapes controls itself (\x1B, \x9B) and colours with ESC sequences of its own:
        // only what it leaves raw is escaped here. The fast path prints printable ASCII only.
        writeEvent(`EVENT: ${fast ?? escapeInvisible(inspect({ event, time, payload }, { depth: 4, breakLength: Infinity, colors: color }), LEFT_RAW_BY_INSPECT)}`);
      }
    },
    info: (message, fields) => line('info', message, fields),
    warn: (message, fields) => line('warn', message, fields),
    error: (message, fields) => line('error', message, fields),
  };
}

/** A logger that drops everything (tests that do not read logs). */
export const silentLogger: Logger = createLogger({ write: () => undefined });

function formatFields(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${escapeInvisible(key)}=${typeof value === 'string' && BARE.test(value) ? value : escapeInvisible(JSON.stringify(value) ?? String(value))}`)
    .join(' ');
}

/**
 * Characters a terminal, an editor or a log viewer may obey rather than print (hardening finding
 * 6, log injection): C0 and C1 controls and DEL (ESC starts the sequences that erase a line or set
 * the terminal's title, U+009B is the same CSI in one character, CR, LF and U+0085 end a line),
 * format characters (bidi overrides and isolates, which reorder what follows; zero-width ones),
 * and the line and paragraph separators U+2028, U+2029.
 */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const INVISIBLE_ALL = new RegExp(INVISIBLE.source, 'gu');
/** The invisible characters util.inspect leaves raw: it escapes every control itself. */
const LEFT_RAW_BY_INSPECT = /[\p{Cf}\p{Zl}\p{Zp}]/gu;

/**
 * A human field's value shown bare: no white space, no invisible character, and no `"` or `\`,
 * so that it cannot be taken for a quoted value. Anything else is shown as a JSON string, where
 * a backslash always starts an escape: a value that spells `\u001b` shows as `"\\u001b"`, one
 * holding ESC as `"\u001b"`, and JSON.parse of what is shown gives back exactly what was sent.
 */
const BARE = /^[^\s"\\\p{Cc}\p{Cf}\p{Zl}\p{Zp}]*$/u;

/**
 * `text` with each of `chars` as a `\uXXXX` escape of its UTF-16 units: JSON's own escape, so
 * JSON text stays valid and means the same (these characters only ever occur inside its strings).
 */
function escapeInvisible(text: string, chars: RegExp = INVISIBLE_ALL): string {
  return INVISIBLE.test(text) ? text.replace(chars, unicodeEscape) : text;
}

function unicodeEscape(char: string): string {
  let out = '';
  for (let i = 0; i < char.length; i++) out += `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return out;
}

/**
 * EVENT lines for stdout, gathered and written together every EVENT_FLUSH_MS (or every
 * EVENT_FLUSH_LINES lines): with a parcel event per line, one write call per line was a tenth of
 * the hub's time under load, and one per turn of the event loop still a few percent. Whatever is
 * still gathered is written when the process exits, and before any other line. A process killed
 * with SIGKILL loses at most the EVENT lines of its last EVENT_FLUSH_MS.
 */
const EVENT_FLUSH_MS = 10;
const EVENT_FLUSH_LINES = 512;
let gathered: string[] = [];
let flushTimer: NodeJS.Timeout | undefined;
let exitHooked = false;

function writeStdoutNow(line: string): void {
  flushStdout();
  process.stdout.write(`${line}\n`);
}

function writeStdoutGathered(line: string): void {
  if (gathered.length === 0) {
    flushTimer = setTimeout(flushStdout, EVENT_FLUSH_MS);
    // prevents the timer from keeping the process alive: the exit hook writes what is left
    flushTimer.unref();
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', flushStdout);
    }
  }
  gathered.push(line);
  if (gathered.length >= EVENT_FLUSH_LINES) flushStdout();
}

function flushStdout(): void {
  clearTimeout(flushTimer);
  flushTimer = undefined;
  if (gathered.length === 0) return;
  const chunk = `${gathered.join('\n')}\n`;
  gathered = [];
  process.stdout.write(chunk);
}

/** Keys util.inspect prints without quotes. */
const PLAIN_KEY = /^[a-zA-Z_][a-zA-Z_0-9]*$/;
/** Strings util.inspect prints as-is between single quotes: printable ASCII without ' or \. */
const PLAIN_STRING = /^[\x20-\x26\x28-\x5b\x5d-\x7e]*$/;

/**
 * What `util.inspect(value, { depth: 4, breakLength: Infinity })` prints, for the plain data records
 * of EVENT lines (objects of strings, at most three non-empty objects deep, which inspect keeps on
 * one line; no accessors or symbol keys, which JSON payloads never have), at a fraction of its
 * cost; undefined for anything else, which then goes to util.inspect.
 */
export function inspectPlain(value: unknown): string | undefined {
  return plain(value, 3);
}

/**
 * `inspectPlain({ event, time, payload })`, with the payload's part formatted once per payload
 * object: a parcel's three EVENT lines log its one order object. Payloads are taken not to change
 * once logged (orders never do).
 */
function plainEvent(event: string, payload: unknown, time: string): string | undefined {
  const e = plain(event, 0);
  const t = plain(time, 0);
  if (e === undefined || t === undefined) return undefined;
  let p: string | undefined;
  if (typeof payload === 'object' && payload !== null) {
    p = formatted.get(payload);
    if (p === undefined && !formatted.has(payload)) {
      p = plain(payload, 2);
      formatted.set(payload, p);
    }
  } else p = plain(payload, 2);
  return p === undefined ? undefined : `{ event: ${e}, time: ${t}, payload: ${p} }`;
}

const formatted = new WeakMap<object, string | undefined>();

/** `levels`: how many more non-empty objects may nest here (a cycle or a deep object is declined). */
function plain(value: unknown, levels: number): string | undefined {
  if (typeof value === 'string') return value.length <= 10_000 && PLAIN_STRING.test(value) ? `'${value}'` : undefined;
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return undefined;
  const keys = Object.keys(value);
  if (keys.length === 0) return '{}';
  if (levels === 0) return undefined;
  let text = '{ ';
  for (const key of keys) {
    // inspect quotes __proto__ as a key
    if (!PLAIN_KEY.test(key) || key === '__proto__') return undefined;
    const inner = plain((value as Record<string, unknown>)[key], levels - 1);
    if (inner === undefined) return undefined;
    text += text.length === 2 ? `${key}: ${inner}` : `, ${key}: ${inner}`;
  }
  return `${text} }`;
}
