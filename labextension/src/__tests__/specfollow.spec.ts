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
