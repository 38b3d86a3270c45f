/**
 * A kernel's environment saved as an image of the user's own: the shapes of
 * `GET /gpu-containers/saves` (openapi.yaml's `Save`), read field by field.
 */
import { isObject, num, str } from './json';

/**
 * One save, as its state is read while it runs and after.
 */
export interface ISave {
  id: string;
  /**
   * A save of a kernel's environment, or a build from the workspace.
   */
  kind: 'save' | 'build';
  /**
   * A build's recipe, its path in the workspace ('' for a save).
   */
  recipe: string;
  /**
   * The image the kernel ran (a build's: its last stage's base).
   */
  base: string;
  /**
   * The new image's reference.
   */
  image: string;
  state: 'queued' | 'copying' | 'building' | 'done' | 'error' | 'cancelled';
  /**
   * What it did, or why it failed, in a sentence.
   */
  message: string;
  /**
   * The HTTP status of its failure; 0 otherwise.
   */
  error_status: number;
  /**
   * Files and folders of the user's packages copied so far, and their bytes.
   */
  files: number;
  bytes: number;
  /**
   * The build's last lines.
   */
  log: string[];
  image_id: string;
  started: number;
  finished: number;
  /**
   * Its place in the server's queue while its state is `queued` (1: next);
   * 0 otherwise.
   */
  position: number;
}

/**
 * The user's saves, and why none can be made on this server ('' when one
 * may).
 */
export interface ISaves {
  saves: ISave[];
  refusal: string;
  /**
   * Why the user may not build images from their workspace here ('' when
   * they may).
   */
  build_refusal: string;
  /**
   * The options behind those refusals (administrators only).
   */
  refusal_setting?: string;
  build_refusal_setting?: string;
}

const STATES: ReadonlyArray<ISave['state']> = [
  'queued',
  'copying',
  'building',
  'done',
  'error',
  'cancelled'
];

/**
 * Whether a save is still under way.
 */
export function saveActive(save: ISave): boolean {
  return (
    save.state === 'queued' ||
    save.state === 'copying' ||
    save.state === 'building'
  );
}

export function saveOf(value: unknown): ISave | null {
  if (!isObject(value) || !str(value.id) || !str(value.image)) {
    return null;
  }
  const state = STATES.find(s => s === value.state);
  if (state === undefined) {
    return null;
  }
  return {
    id: str(value.id),
    kind: value.kind === 'build' ? 'build' : 'save',
    recipe: str(value.recipe),
    base: str(value.base),
    image: str(value.image),
    state,
    message: str(value.message),
    error_status: num(value.error_status) ?? 0,
    files: num(value.files) ?? 0,
    bytes: num(value.bytes) ?? 0,
    log: Array.isArray(value.log) ? value.log.map(str).filter(Boolean) : [],
    image_id: str(value.image_id),
    started: num(value.started) ?? 0,
    finished: num(value.finished) ?? 0,
    position: num(value.position) ?? 0
  };
}

export function savesOf(value: unknown): ISaves | null {
  if (!isObject(value) || !Array.isArray(value.saves)) {
    return null;
  }
  return {
    saves: value.saves.map(saveOf).filter((s): s is ISave => s !== null),
    refusal: str(value.refusal),
    build_refusal: str(value.build_refusal)
  };
}
