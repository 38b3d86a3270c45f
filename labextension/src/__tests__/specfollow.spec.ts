/**
 * The page reads the kernel specs again when the catalog names one it does
 * not know (specfollow.ts), once per such set of names.
 */
import { missingSpecs, SpecFollower } from '../specfollow';
import type { ICatalog } from '../imagetypes';

function catalogOf(...kernelNames: string[]): ICatalog {
  return {
    images: kernelNames.map(kernel_name => ({ kernel_name }))
  } as unknown as ICatalog;
}

describe('missingSpecs', () => {
  it("names the catalog's kernel specs the page does not know", () => {
    expect(
      missingSpecs(catalogOf('gpuc-b', 'gpuc-a', '', 'gpuc-known', 'gpuc-b'), {
        'gpuc-known': {}
      })
    ).toEqual(['gpuc-a', 'gpuc-b']);
  });

  it('names a known spec made for other content than its image has now (a moved tag)', () => {
    const row = (id: string, gpu: boolean) =>
      ({ kernel_name: 'gpuc-course', id, gpu }) as unknown;
    const catalog = (id: string, gpu: boolean) =>
      ({ images: [row(id, gpu)] }) as unknown as ICatalog;
    const spec = (image_id: string, gpu: boolean) => ({
      'gpuc-course': { metadata: { gpu_containers: { image_id, gpu } } }
    });
    expect(
      missingSpecs(catalog('sha256:a', true), spec('sha256:a', true))
    ).toEqual([]);
    // Moved to a CPU build: both the content and the kind differ.
    expect(
      missingSpecs(catalog('sha256:b', false), spec('sha256:a', true))
    ).toEqual(['gpuc-course sha256:b']);
    // The administrator's word changed the kind of the same content.
    expect(
      missingSpecs(catalog('sha256:a', false), spec('sha256:a', true))
    ).toEqual(['gpuc-course sha256:a']);
    // A spec that says neither (a listed image not pulled yet, an older server's).
    expect(missingSpecs(catalog('', true), { 'gpuc-course': {} })).toEqual([]);
  });

  it('names none before both are read', () => {
    expect(missingSpecs(null, {})).toEqual([]);
    expect(missingSpecs(catalogOf('gpuc-a'), null)).toEqual([]);
  });
});

describe('SpecFollower', () => {
  it('reads the specs once per set of missing names', () => {
    const refresh = jest.fn().mockResolvedValue(undefined);
    const follower = new SpecFollower(refresh);
    follower.follow(catalogOf('gpuc-known'), { 'gpuc-known': {} });
    expect(refresh).not.toHaveBeenCalled();
    follower.follow(catalogOf('gpuc-new'), {});
    follower.follow(catalogOf('gpuc-new'), {});
    expect(refresh).toHaveBeenCalledTimes(1);
    // Another new tag: read again.
    follower.follow(catalogOf('gpuc-new', 'gpuc-newer'), {});
    expect(refresh).toHaveBeenCalledTimes(2);
  });

  it('asks again at the next change after a read that failed', async () => {
    const refresh = jest.fn().mockRejectedValue(new Error('offline'));
    const follower = new SpecFollower(refresh);
    follower.follow(catalogOf('gpuc-new'), {});
    await new Promise(resolve => setTimeout(resolve, 0));
    follower.follow(catalogOf('gpuc-new'), {});
    expect(refresh).toHaveBeenCalledTimes(2);
  });
});
