/**
 * The part of js-yaml (4.x, which ships no types) that the tests use.
 */
declare module 'js-yaml' {
  export function load(text: string): unknown;
}
