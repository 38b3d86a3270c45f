/**
 * The page's kernel specs follow the image catalog. The server offers a
 * kernel spec for an image as soon as the engine has it (a tag made a minute
 * ago, a build, a pull), but JupyterLab reads the kernel specs once a minute:
 * until then a notebook on the new image would be "Not in a container" under
 * the spec's raw name, and its kernel picker would preselect another. Once
 * the catalog names a kernel spec the page does not know, the page reads the
 * specs again, once per such set of names.
 */
import type { ICatalog } from './imagetypes';

/**
 * The catalog's kernel spec names missing from `known`, sorted; empty when
 * there are none.
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
    if (row.kernel_name && !(row.kernel_name in known)) {
      missing.add(row.kernel_name);
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
