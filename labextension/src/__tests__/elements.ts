/**
 * Read React elements without a DOM (the tests run in node): function
 * components without hooks are expanded by calling them, host elements
 * (`<p>`, `<input>`) are kept with their props.
 */
import * as React from 'react';

type Props = Record<string, any> & { children?: React.ReactNode };

/**
 * A host element (`<input>`, `<p>`...) of a tree.
 */
export type HostElement = React.ReactElement<Props, string>;

function expand(node: React.ReactNode): React.ReactNode {
  if (React.isValidElement(node) && typeof node.type === 'function') {
    const component = node.type as (props: Props) => React.ReactNode;
    return expand(component(node.props as Props));
  }
  return node;
}

function children(node: React.ReactNode): React.ReactNode[] {
  const expanded = expand(node);
  if (Array.isArray(expanded)) {
    return expanded;
  }
  if (React.isValidElement(expanded)) {
    const kids = (expanded.props as Props).children;
    return kids === undefined ? [] : Array.isArray(kids) ? kids : [kids];
  }
  return [];
}

/**
 * The text a tree shows, as the DOM's `textContent` would read it.
 */
export function textOf(node: React.ReactNode): string {
  const expanded = expand(node);
  if (typeof expanded === 'string' || typeof expanded === 'number') {
    return String(expanded);
  }
  if (
    expanded === null ||
    expanded === undefined ||
    typeof expanded === 'boolean'
  ) {
    return '';
  }
  return children(expanded).map(textOf).join('');
}

/**
 * The host elements of a tree that `match`, in document order.
 */
export function findAll(
  node: React.ReactNode,
  match: (element: HostElement) => boolean
): HostElement[] {
  const expanded = expand(node);
  const found: HostElement[] = [];
  if (React.isValidElement(expanded) && typeof expanded.type === 'string') {
    const element = expanded as HostElement;
    if (match(element)) {
      found.push(element);
    }
  }
  for (const child of children(expanded)) {
    found.push(...findAll(child, match));
  }
  return found;
}

/**
 * The one host element of a tree that `match`es.
 */
export function findOne(
  node: React.ReactNode,
  match: (element: HostElement) => boolean
): HostElement {
  const found = findAll(node, match);
  if (found.length !== 1) {
    throw new Error(`${found.length} elements match, not 1`);
  }
  return found[0];
}

/**
 * A matcher of host elements by tag and class.
 */
export function by(type: string, className?: string) {
  return (element: HostElement): boolean =>
    element.type === type &&
    (className === undefined ||
      String(element.props.className ?? '')
        .split(/\s+/)
        .includes(className));
}
