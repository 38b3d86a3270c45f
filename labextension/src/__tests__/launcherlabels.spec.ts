import { BREAK, withBreakPoints } from '../launcherlabels';

describe('withBreakPoints', () => {
  it.each<[string, string]>([
    [
      'PyTorch 24.05 · jgc-test/ngc-like:24.05-py3',
      `PyTorch 24.05 · jgc${BREAK}-test/${BREAK}ngc${BREAK}-like:${BREAK}24.05${BREAK}-py3`
    ],
    [
      'Python 3.11 · jgc/debian-ipykernel:bookworm',
      `Python 3.11 · jgc/${BREAK}debian${BREAK}-ipykernel:${BREAK}bookworm`
    ],
    // Words without break points, and a version, stay whole.
    ['Python 3 (ipykernel)', 'Python 3 (ipykernel)']
  ])('breaks %p only between parts of the reference', (label, expected) => {
    expect(withBreakPoints(label)).toBe(expected);
  });

  it('is idempotent: a label that has its break points keeps them', () => {
    const once = withBreakPoints(
      'TensorFlow 2.15 · tensorflow/tensorflow:2.15.0-gpu'
    );
    expect(withBreakPoints(once)).toBe(once);
    expect(once.split(BREAK).join('')).toBe(
      'TensorFlow 2.15 · tensorflow/tensorflow:2.15.0-gpu'
    );
  });
});
