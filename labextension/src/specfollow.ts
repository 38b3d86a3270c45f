/**
 * The page's kernel specs follow the image catalog. The server offers a
 * kernel spec for an image as soon as the engine has it (a tag made a minute
 * ago, a build, a pull), but JupyterLab reads the kernel specs once a minute:
 * until then a notebook on the new image would be "Not in a container" under
 * the spec's raw name, and its kernel picker would preselect another. Once
 * the catalog names a kernel spec the page does not know, or one the page
 * knows for other content than the image has now (a tag moved: a GPU build
 * became a CPU build, whose notebooks ask for no GPU), the page reads the
 * specs again, once per such set of names.
 */
import type { ICatalog } from './imagetypes';

/**
 * The image a kernel spec was made for, as its metadata says: its content id
 * and whether it is a GPU build (`undefined` where it does not say).
 */
function specImage(spec: unknown): { id?: unknown; gpu?: unknown } {
  const own = (spec as { metadata?: { gpu_containers?: unknown } } | null)
    ?.metadata?.gpu_containers;
  if (!own || typeof own !== 'object') {
    return {};
  }
  const { image_id: id, gpu } = own as { image_id?: unknown; gpu?: unknown };
  return { id, gpu };
}

/**
 * The catalog's kernel spec names missing from `known`, or known for other
 * content than their image has now, sorted; empty when there are none.
 */
export function missingSpecs(
  catalog: ICatalog | null,
  known: Readonly<Record<string, unknown>> | null | undefined
): string[] {
  if (!catalog || !known) {
    return [];
  }
  const missing = new Set<string>();
  for (const row of catalog.images) {
    if (!row.kernel_name) {
      continue;
    }
    if (!(row.kernel_name in known)) {
      missing.add(`${row.kernel_name}`);
      continue;
    }
    const { id, gpu } = specImage(known[row.kernel_name]);
    const moved =
      typeof id === 'string' && id !== '' && row.id !== '' && id !== row.id;
    if (moved || (typeof gpu === 'boolean' && gpu !== row.gpu)) {
      // (Named with the content: a later move of the same tag is read again.)
      missing.add(`${row.kernel_name} ${row.id}`);
    }
  }
  return [...missing].sort();
}

/**
 * How many times the specs are read for one set of names, and how long to
 * wait before each read after the first (ms). The catalog reads the engine
 * itself, while the server's kernel specs follow the engine a moment later (a
 * new content is probed first): a read at once may still give the old spec.
 */
export const READ_DELAYS_MS = [0, 2_000, 5_000, 10_000, 20_000];

/**
 * What to do with the catalog's names the page does not know: read the specs
 * again, and again a few times while the same names are still not known (a
 * spec the server withholds, say a probe that failed, is not read again and
 * again), one read at a time.
 */
export class SpecFollower {
  constructor(
    private readonly _refresh: () => Promise<void>,
    private readonly _catalog: () => ICatalog | null,
    private readonly _known: () =>
      Readonly<Record<string, unknown>> | null | undefined,
    private readonly _delays: readonly number[] = READ_DELAYS_MS
  ) {}

  /**
   * Look again (the model changed: a catalog read).
   */
  follow(): void {
    const missing = missingSpecs(this._catalog(), this._known()).join('\n');
    if (!missing || this._busy) {
      return;
    }
    if (missing !== this._last) {
      this._last = missing;
      this._reads = 0;
    }
    if (this._reads >= this._delays.length) {
      return;
    }
    const delay = this._delays[this._reads++];
    this._busy = true;
    const read = async () => {
      try {
        await this._refresh();
      } catch {
        // Not read (the server away): the next delay's read asks again.
      } finally {
        this._busy = false;
      }
      this.follow(); // still not known: again, after the next delay
    };
    if (delay > 0) {
      this._timer = setTimeout(() => void read(), delay);
    } else {
      void read();
    }
  }

  /**
   * Stop any read to come.
   */
  dispose(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    this._reads = this._delays.length;
  }

  private _last = '';
  private _reads = 0;
  private _busy = false;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
