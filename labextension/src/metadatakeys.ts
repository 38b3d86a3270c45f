/**
 * The notebook metadata section of this extension, next to `kernelspec`: the
 * GPU request (switching.ts), the environment stamp and the pinned digest
 * (environment.ts) travel with the notebook (renamed, copied, uploaded,
 * shared), and the server reads them whenever a kernel starts for it. Each
 * writer changes its own key and keeps the others'.
 */
export const GPU_METADATA_KEY = 'gpu_containers';

type Section = Record<string, unknown>;

/**
 * The section of a notebook's metadata (`{}` when it has none, or something
 * that is not one).
 */
export function sectionOf(
  metadata: Record<string, unknown> | undefined
): Section {
  const section = metadata?.[GPU_METADATA_KEY];
  return typeof section === 'object' &&
    section !== null &&
    !Array.isArray(section)
    ? (section as Section)
    : {};
}

/**
 * The section with `key` set to `value` (`null`: removed), the other keys
 * kept; `undefined` when it ends up empty.
 */
export function sectionWith(
  metadata: Record<string, unknown> | undefined,
  key: string,
  value: unknown
): Section | undefined {
  const section = { ...sectionOf(metadata) };
  if (value === null) {
    delete section[key];
  } else {
    section[key] = value;
  }
  return Object.keys(section).length ? section : undefined;
}

/**
 * The part of a notebook's model this section is written through.
 */
export interface IMetadataModel {
  readonly metadata: Record<string, unknown>;
  setMetadata(key: string, value: unknown): void;
  deleteMetadata(key: string): void;
}

/**
 * Set `key` of the notebook's section to `value` (`null`: remove it), the
 * other keys kept.
 */
export function setInSection(
  model: IMetadataModel | null | undefined,
  key: string,
  value: unknown
): void {
  if (!model) {
    return;
  }
  const section = sectionWith(model.metadata, key, value);
  if (section) {
    model.setMetadata(GPU_METADATA_KEY, section);
  } else {
    model.deleteMetadata(GPU_METADATA_KEY);
  }
}
