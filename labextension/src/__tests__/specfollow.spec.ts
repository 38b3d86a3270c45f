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
  // The reads' delays run on jest's clock: nothing here waits for real time.
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());
  const settle = () => jest.advanceTimersByTimeAsync(0);

  function following(refresh: jest.Mock, delays = [0, 5, 5]) {
    let catalog = catalogOf('gpuc-known');
    let known: Record<string, unknown> = { 'gpuc-known': {} };
    const follower = new SpecFollower(
      refresh,
      () => catalog,
      () => known,
      delays
    );
    return {
      follower,
      set(names: string[], knownNow: Record<string, unknown>) {
        catalog = catalogOf(...names);
        known = knownNow;
      }
    };
  }

  it('reads the specs while the names stay unknown, a few times, one read at a time', async () => {
    const refresh = jest.fn().mockResolvedValue(undefined);
    const { follower, set } = following(refresh);
    follower.follow();
    expect(refresh).not.toHaveBeenCalled();
    set(['gpuc-new'], {});
    follower.follow();
    follower.follow(); // (the first read under way)
    expect(refresh).toHaveBeenCalledTimes(1);
    // The server's specs may follow the engine a moment later: read again, by
    // itself, after each delay; then no more for the same names.
    await jest.advanceTimersByTimeAsync(50);
    expect(refresh).toHaveBeenCalledTimes(3);
    follower.follow();
    await jest.advanceTimersByTimeAsync(20);
    expect(refresh).toHaveBeenCalledTimes(3);
    // Another new tag: read again.
    set(['gpuc-new', 'gpuc-newer'], {});
    follower.follow();
    expect(refresh).toHaveBeenCalledTimes(4);
    follower.dispose();
  });

  it('stops once the page knows them', async () => {
    const refresh = jest.fn().mockResolvedValue(undefined);
    const { follower, set } = following(refresh);
    set(['gpuc-new'], {});
    follower.follow();
    set(['gpuc-new'], { 'gpuc-new': {} }); // the read brought it
    await jest.advanceTimersByTimeAsync(30);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('reads again after a read that failed, within the same few reads', async () => {
    const refresh = jest.fn().mockRejectedValue(new Error('offline'));
    const { follower, set } = following(refresh);
    set(['gpuc-new'], {});
    follower.follow();
    await jest.advanceTimersByTimeAsync(50);
    expect(refresh).toHaveBeenCalledTimes(3);
    await settle();
    expect(refresh).toHaveBeenCalledTimes(3);
  });
});
