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
 * What to do with the catalog's names the page does not know: read the specs
 * again, unless the last read was for the same names (a spec the server
 * withholds, say a probe that failed, is not read again and again).
 */
export class SpecFollower {
  constructor(private readonly _refresh: () => Promise<void>) {}

  follow(
    catalog: ICatalog | null,
    known: Readonly<Record<string, unknown>> | null | undefined
  ): void {
    const missing = missingSpecs(catalog, known).join('\n');
    if (!missing || missing === this._last) {
      return;
    }
    this._last = missing;
    void this._refresh().catch(() => {
      this._last = ''; // not read: the next change asks again
    });
  }

  private _last = '';
}
