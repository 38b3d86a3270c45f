import { withLastDiskUse } from '../catalogmodel';
import { makeCatalog, makeRow } from './fixtures';

describe('withLastDiskUse', () => {
  const rows = [makeRow({ id: 'sha256:a', size: 1000 })];

  it("keeps the engine's last disk totals when a read comes without them", () => {
    const before = makeCatalog(rows);
    const now = { ...makeCatalog(rows), disk: null };
    expect(withLastDiskUse(before, now).disk).toEqual(before.disk);
    expect(withLastDiskUse(before, now).images).toBe(now.images);
  });

  it('takes new totals, and has none before the engine ever gave them', () => {
    const before = makeCatalog(rows);
    const now = makeCatalog(rows);
    now.disk = { ...now.disk!, layers_bytes: 600 };
    expect(withLastDiskUse(before, now).disk?.layers_bytes).toBe(600);
    expect(withLastDiskUse(null, { ...now, disk: null }).disk).toBeNull();
  });
});
