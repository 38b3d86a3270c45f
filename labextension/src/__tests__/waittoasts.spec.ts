import { WaitToasts } from '../waittoasts';

describe('WaitToasts', () => {
  it("dismisses a wait's toast once the wait ends, and only its own", () => {
    const dismiss = jest.fn();
    const toasts = new WaitToasts(dismiss);
    toasts.told('kernel-a', 'toast-1');
    toasts.told('kernel-b', 'toast-2');
    toasts.ended('kernel-a');
    expect(dismiss.mock.calls).toEqual([['toast-1']]);
    toasts.ended('kernel-a'); // (once)
    toasts.ended('kernel-c'); // (never told)
    expect(dismiss).toHaveBeenCalledTimes(1);
  });

  it('keeps one toast per wait: a new one replaces the last', () => {
    const dismiss = jest.fn();
    const toasts = new WaitToasts(dismiss);
    toasts.told('kernel-a', 'toast-1');
    toasts.told('kernel-a', 'toast-2');
    expect(dismiss.mock.calls).toEqual([['toast-1']]);
    toasts.ended('kernel-a');
    expect(dismiss.mock.calls).toEqual([['toast-1'], ['toast-2']]);
  });
});
