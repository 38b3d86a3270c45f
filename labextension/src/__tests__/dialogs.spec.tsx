import { showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { putRegistryCredentials } from '../api';
import { LoginForm, askRegistryLogin } from '../credentials';
import {
  FormDialogBody,
  IFormProps,
  confirmDialog,
  showFormDialog
} from '../dialogs';
import { translationBundle } from '../i18n';
import { by, findAll, findOne, textOf } from './elements';
import { pseudoBundle } from './pseudo';

// The JupyterLab UI packages need a DOM, which the node test environment does
// not have: a ReactWidget that only keeps its classes, and buttons as data.
jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {
    readonly classes: string[] = [];
    addClass(name: string): void {
      this.classes.push(name);
    }
  }
}));
jest.mock('@jupyterlab/apputils', () => ({
  Dialog: {
    cancelButton: (options: object = {}) => ({
      label: 'Cancel',
      accept: false,
      ...options
    }),
    okButton: (options: object = {}) => ({
      label: 'OK',
      accept: true,
      displayType: 'default',
      ...options
    }),
    warnButton: (options: object = {}) => ({
      label: 'OK',
      accept: true,
      displayType: 'warn',
      ...options
    })
  },
  showDialog: jest.fn()
}));
jest.mock('../api', () => ({ putRegistryCredentials: jest.fn() }));

const trans = translationBundle();

/**
 * Have the next dialog closed with its accept button (or not), and `value`.
 */
function answer(accept: boolean, value: unknown = null): void {
  jest.mocked(showDialog).mockResolvedValueOnce({
    button: { accept } as any,
    isChecked: null,
    value
  });
}

/**
 * The options of the last dialog shown.
 */
function shown(): Record<string, any> {
  const calls = jest.mocked(showDialog).mock.calls;
  return calls[calls.length - 1][0] as Record<string, any>;
}

/**
 * Draw a form body, with the props its form is given.
 */
function draw<S extends object>(
  body: FormDialogBody<S, unknown>
): { tree: React.ReactNode; props: IFormProps<S> } {
  // The body draws a stateful holder; call its render function as React would.
  const holder = body.render() as React.ReactElement<{
    initial: S;
    render: (props: IFormProps<S>) => JSX.Element;
    onChange: (state: S) => void;
  }>;
  let state = holder.props.initial;
  const props: IFormProps<S> = {
    get state() {
      return state;
    },
    change: patch => {
      state = { ...state, ...patch };
      holder.props.onChange(state);
    }
  };
  return { tree: holder.props.render(props), props };
}

afterEach(() => {
  jest.clearAllMocks();
});

describe('showFormDialog', () => {
  const body = new FormDialogBody({
    initial: { n: 1 },
    render: () => <p />,
    value: state => state.n
  });

  it("resolves with the form's value when accepted", async () => {
    answer(true, 1);
    await expect(
      showFormDialog({
        title: 'Pick',
        body,
        accept: 'Go',
        focusNodeSelector: 'select'
      })
    ).resolves.toBe(1);
    expect(shown()).toEqual({
      title: 'Pick',
      body,
      buttons: [
        { label: 'Cancel', accept: false },
        { label: 'Go', accept: true, displayType: 'default' }
      ],
      focusNodeSelector: 'select'
    });
  });

  it('resolves with null when cancelled', async () => {
    answer(false, 1);
    await expect(
      showFormDialog({ title: 'Pick', body, accept: 'Go' })
    ).resolves.toBeNull();
  });
});

describe('confirmDialog', () => {
  it('shows the sentence with a warning button, and says whether it was pressed', async () => {
    answer(true);
    await expect(
      confirmDialog({ title: 'Sure?', body: 'It is lost.', action: 'Lose' })
    ).resolves.toBe(true);
    const options = shown();
    expect(options.title).toBe('Sure?');
    expect(textOf(options.body)).toBe('It is lost.');
    expect(options.buttons).toEqual([
      { label: 'Cancel', accept: false },
      { label: 'Lose', accept: true, displayType: 'warn' }
    ]);
    answer(false);
    await expect(
      confirmDialog({ title: 'Sure?', body: 'It is lost.', action: 'Lose' })
    ).resolves.toBe(false);
  });
});

describe('FormDialogBody', () => {
  it('draws its state and gives the value of the latest one', () => {
    const body = new FormDialogBody({
      className: 'jgc-test',
      initial: { name: 'a', count: 1 },
      render: ({ state }) => (
        <p>
          {state.name} × {state.count}
        </p>
      ),
      value: state => `${state.name}${state.count}`
    });
    expect((body as unknown as { classes: string[] }).classes).toEqual([
      'jgc-test'
    ]);
    expect(body.getValue()).toBe('a1');
    const { tree, props } = draw(body);
    expect(textOf(tree)).toBe('a × 1');
    props.change({ count: 2 });
    props.change({ name: 'b' });
    expect(body.state).toEqual({ name: 'b', count: 2 });
    expect(body.getValue()).toBe('b2');
  });
});

describe('the registry login', () => {
  it('explains why, with a hint for the registry, and asks for a login to remember', () => {
    const { tree } = draw(
      new LoginForm('registry.example', 'Authorization failed.', trans)
    );
    const form = findOne(tree, by('form', 'jgc-login'));
    expect(textOf(findOne(tree, by('p', 'jgc-note')))).toBe(
      'Authorization failed.'
    );
    expect(textOf(findOne(tree, by('p', 'jgc-subtle')))).toBe(
      'Your login for registry.example.'
    );
    expect(
      findAll(tree, by('label', 'jgc-field')).map(label => textOf(label))
    ).toEqual(['Username', 'Password or token']);
    const inputs = findAll(tree, by('input'));
    expect(
      inputs.map(({ props }) => [
        props.type,
        props.autoComplete,
        props.required
      ])
    ).toEqual([
      ['text', 'username', true],
      ['password', 'current-password', true],
      ['checkbox', undefined, undefined]
    ]);
    expect(
      inputs.every(({ props }) => props.className === 'jp-mod-styled')
    ).toBe(true);
    expect(inputs[2].props.checked).toBe(true);
    expect(textOf(findAll(tree, by('label'))[2])).toBe(
      ' Remember for this server session (kept in memory only)'
    );
    // Enter never submits the form (the dialog takes it).
    const event = { preventDefault: jest.fn() };
    form.props.onSubmit(event);
    expect(event.preventDefault).toHaveBeenCalled();
  });

  it("says it through the extension's bundle", async () => {
    const pseudo = pseudoBundle();
    const t = (text: string) => `⟦jupyter_gpu_containers:${text}⟧`;
    const { tree } = draw(new LoginForm('registry.example', 'No.', pseudo));
    expect(textOf(findOne(tree, by('p', 'jgc-note')))).toBe('No.');
    expect(textOf(findOne(tree, by('p', 'jgc-subtle')))).toBe(
      t('Your login for registry.example.')
    );
    expect(findAll(tree, by('label')).map(label => textOf(label))).toEqual([
      t('Username'),
      t('Password or token'),
      ` ${t('Remember for this server session (kept in memory only)')}`
    ]);
    answer(false);
    await askRegistryLogin('registry.example', 'No.', pseudo);
    expect(shown().title).toBe(t('Log in to registry.example'));
    expect(shown().buttons[1].label).toBe(t('Pull'));
  });

  it('tells how to log in to NGC', () => {
    const { tree } = draw(new LoginForm('nvcr.io', 'Refused.', trans));
    expect(textOf(findOne(tree, by('p', 'jgc-subtle')))).toBe(
      'For NGC the username is $oauthtoken and the password is your API key.'
    );
  });

  it('gives what was typed, the username trimmed', () => {
    const body = new LoginForm('nvcr.io', 'Refused.', trans);
    const { tree } = draw(body);
    const [user, password, remember] = findAll(tree, by('input'));
    user.props.onChange({ target: { value: ' $oauthtoken ' } });
    password.props.onChange({ target: { value: ' key ' } });
    remember.props.onChange({ target: { checked: false } });
    expect(body.getValue()).toEqual({
      username: '$oauthtoken',
      password: ' key ',
      remember: false
    });
  });

  it('asks, stores a login to remember, and gives it back', async () => {
    answer(true, { username: 'me', password: 'pw', remember: true });
    await expect(
      askRegistryLogin('nvcr.io', 'Refused.', trans)
    ).resolves.toEqual({
      username: 'me',
      password: 'pw'
    });
    const options = shown();
    expect(options.title).toBe('Log in to nvcr.io');
    expect(options.body).toBeInstanceOf(LoginForm);
    expect(options.buttons[1]).toEqual(
      expect.objectContaining({ label: 'Pull', accept: true })
    );
    expect(options.focusNodeSelector).toBe('input');
    expect(putRegistryCredentials).toHaveBeenCalledWith(
      'nvcr.io',
      'me',
      'pw',
      undefined,
      trans
    );
  });

  it('does not store a login not to remember', async () => {
    answer(true, { username: 'me', password: 'pw', remember: false });
    await expect(
      askRegistryLogin('nvcr.io', 'Refused.', trans)
    ).resolves.toEqual({
      username: 'me',
      password: 'pw'
    });
    expect(putRegistryCredentials).not.toHaveBeenCalled();
  });

  it('gives null when cancelled, or without a username', async () => {
    answer(false, { username: 'me', password: 'pw', remember: true });
    await expect(
      askRegistryLogin('nvcr.io', 'Refused.', trans)
    ).resolves.toBeNull();
    answer(true, { username: '', password: 'pw', remember: true });
    await expect(
      askRegistryLogin('nvcr.io', 'Refused.', trans)
    ).resolves.toBeNull();
    expect(putRegistryCredentials).not.toHaveBeenCalled();
  });
});
