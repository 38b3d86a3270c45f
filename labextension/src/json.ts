/**
 * The one policy for reading the server's JSON: nothing the server sends is
 * taken on trust by a cast. Every answer of the REST API and every event of
 * its streams goes through a reader: a function from `unknown` to the typed
 * document, or `null` when the value is not one.
 *
 * Two kinds of readers, by what a wrong answer means:
 *
 * - The documents the front end cannot work without (status, GPUs, catalog,
 *   pulls, kernels: readers.ts) are checked for the shape their users rely
 *   on; a request whose answer is not one fails with an `ApiError`, as one
 *   that is not JSON does (api.ts, `readAPI`).
 * - The documents of routes an older server lacks (queue, quota, admin view,
 *   notices, pre-pulls: sharingreaders.ts) are read field by field, and a
 *   value that is not one reads as `null` or nothing: a panel without that
 *   part, never a broken one.
 *
 * An event of a stream that is not what its name says is ignored, as one that
 * is not JSON always was: the next event carries a whole snapshot again.
 */

/**
 * A JSON object, its fields not yet read.
 */
export type Json = Record<string, unknown>;

/**
 * Reads a typed document from parsed JSON, or `null` when it is not one.
 */
export type Reader<T> = (value: unknown) => T | null;

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Whether `value` is an array of JSON objects.
 */
export function isObjectArray(value: unknown): value is Json[] {
  return Array.isArray(value) && value.every(isObject);
}

/**
 * A string, or `''` for anything else.
 */
export function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/**
 * A finite number, or `null` for anything else.
 */
export function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/**
 * A string, or `null` for anything else (the API's nullable strings).
 */
export function strOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/**
 * The value of some JSON text, or `undefined` when it is none (or empty).
 */
export function parseJson(text: string | undefined): unknown {
  if (!text) {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The document an event's data carries, or `null` when it carries none (no
 * data, text that is not JSON, JSON that `read` does not accept).
 */
export function readEvent<T>(
  data: string | undefined,
  read: Reader<T>
): T | null {
  const value = parseJson(data);
  return value === undefined ? null : read(value);
}

/**
 * A reader that accepts what `accepts` says is a `T`, as it is (the checked
 * shape is what the front end relies on; the rest is the API's contract,
 * openapi.yaml, which the jest suite holds the *types.ts modules to).
 */
export function guarded<T>(accepts: (value: unknown) => value is T): Reader<T> {
  return value => (accepts(value) ? value : null);
}
