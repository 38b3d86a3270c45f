/**
 * Reading `GET /gpu-containers/packages` (json.ts's policy): a route an older
 * server lacks, read field by field; a folder that is not one is left out.
 */
import { isObject, num, str } from './json';
import { IPackages, IPackagesFolder } from './packagetypes';

export function packagesFolderOf(value: unknown): IPackagesFolder | null {
  if (!isObject(value) || !str(value.key)) {
    return null;
  }
  return {
    key: str(value.key),
    image: str(value.image),
    bytes: num(value.bytes) ?? 0,
    entries: num(value.entries) ?? 0,
    packages: num(value.packages) ?? 0,
    complete: value.complete !== false,
    modified: num(value.modified) ?? 0,
    over_limit: value.over_limit === true
  };
}

export function packagesOf(value: unknown): IPackages | null {
  if (!isObject(value) || typeof value.enabled !== 'boolean') {
    return null;
  }
  const folders = Array.isArray(value.folders) ? value.folders : [];
  return {
    enabled: value.enabled,
    dir: str(value.dir),
    max_bytes: num(value.max_bytes) ?? 0,
    measured: value.measured === true,
    folders: folders
      .map(packagesFolderOf)
      .filter((f): f is IPackagesFolder => f !== null),
    message: str(value.message)
  };
}
