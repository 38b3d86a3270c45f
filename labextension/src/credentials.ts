/**
 * The dialog that asks for a registry login when a pull was refused.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { putRegistryCredentials } from './api';

/**
 * A registry login; `remember` keeps it in the server's memory for later
 * pulls (never on disk).
 */
export interface IRegistryLogin {
  username: string;
  password: string;
  remember: boolean;
}

class LoginForm extends Widget {
  constructor(registry: string, reason: string) {
    super({ node: document.createElement('form') });
    this.addClass('jgc-login');
    const why = document.createElement('p');
    why.className = 'jgc-note';
    why.textContent = reason;
    const hint = document.createElement('p');
    hint.className = 'jgc-subtle';
    hint.textContent =
      registry === 'nvcr.io'
        ? 'For NGC the username is $oauthtoken and the password is your API key.'
        : `Your login for ${registry}.`;
    this._username = field('text', 'username', 'Username');
    this._password = field('password', 'current-password', 'Password or token');
    this._remember = document.createElement('input');
    this._remember.type = 'checkbox';
    this._remember.checked = true;
    const remember = document.createElement('label');
    remember.append(
      this._remember,
      ' Remember for this server session (kept in memory only)'
    );
    this.node.append(
      why,
      hint,
      this._username.parentElement!,
      this._password.parentElement!,
      remember
    );
  }

  getValue(): IRegistryLogin {
    return {
      username: this._username.value.trim(),
      password: this._password.value,
      remember: this._remember.checked
    };
  }

  private _username: HTMLInputElement;
  private _password: HTMLInputElement;
  private _remember: HTMLInputElement;
}

function field(
  type: string,
  autocomplete: AutoFill,
  label: string
): HTMLInputElement {
  const wrapper = document.createElement('label');
  wrapper.className = 'jgc-field';
  const input = document.createElement('input');
  input.type = type;
  input.autocomplete = autocomplete;
  input.className = 'jp-mod-styled';
  input.required = true;
  wrapper.append(label, input);
  return input;
}

/**
 * Ask for a login to `registry`, explaining `reason` (the server's
 * sentence). When "remember" is ticked the login is stored on the server
 * first. Resolves with the credentials to retry with, or `null` when the
 * user gives up.
 */
export async function askRegistryLogin(
  registry: string,
  reason: string
): Promise<{ username: string; password: string } | null> {
  const result = await showDialog({
    title: `Log in to ${registry}`,
    body: new LoginForm(registry, reason),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Pull' })],
    focusNodeSelector: 'input'
  });
  const login = result.value;
  if (!result.button.accept || !login || !login.username) {
    return null;
  }
  if (login.remember) {
    await putRegistryCredentials(registry, login.username, login.password);
  }
  return { username: login.username, password: login.password };
}
