import {
  BREAK,
  RETIRED_CARD_CLASS,
  hideRetiredCards,
  retiredDisplayNames,
  withBreakPoints
} from '../launcherlabels';

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

describe('retired images in the Launcher', () => {
  const spec = (
    display_name: string,
    retired?: { message: string; redirect: string }
  ) => ({
    name: display_name,
    display_name,
    language: 'python',
    argv: [],
    resources: {},
    metadata: { gpu_containers: retired ? { image: 'x', retired } : {} }
  });

  it('names the specs of retired images by their display names', () => {
    const names = retiredDisplayNames({
      default: 'a',
      kernelspecs: {
        a: spec('Python 3 · jgc/old:1', { message: 'Moved.', redirect: '' }),
        b: spec('Python 3 · jgc/new:1'),
        c: undefined
      }
    });
    expect([...names]).toEqual(['Python 3 · jgc/old:1']);
    expect(retiredDisplayNames(null).size).toBe(0);
  });

  it("hides a retired image's cards, notebook and console alike, and shows them again once it is not", () => {
    // The cards' surface hideRetiredCards uses (the tests run without a DOM).
    const card = (title: string) => {
      const classes = new Set<string>();
      return {
        getAttribute: (name: string) => (name === 'title' ? title : null),
        classList: {
          contains: (c: string) => classes.has(c),
          toggle: (c: string, on: boolean) => {
            if (on) {
              classes.add(c);
            } else {
              classes.delete(c);
            }
            return on;
          }
        }
      };
    };
    const all = [
      card('Python 3 · jgc/old:1'), // the notebook's card
      card('Python 3 · jgc/old:1'), // the console's
      card('Python 3 · jgc/new:1')
    ];
    const root = {
      querySelectorAll: (selector: string) => {
        expect(selector).toBe('.jp-LauncherCard');
        return all;
      }
    } as unknown as ParentNode;
    const hidden = () => all.map(c => c.classList.contains(RETIRED_CARD_CLASS));
    hideRetiredCards(root, new Set(['Python 3 · jgc/old:1']));
    expect(hidden()).toEqual([true, true, false]);
    hideRetiredCards(root, new Set(['Python 3 · jgc/old:1']));
    expect(hidden()).toEqual([true, true, false]);
    hideRetiredCards(root, new Set());
    expect(hidden()).toEqual([false, false, false]);
  });
});
