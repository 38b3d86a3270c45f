/**
 * The dialog that asks for a registry login when a pull was refused.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { putRegistryCredentials } from './api';
import { FormDialogBody, IFormProps, showFormDialog } from './dialogs';
import { IRegistryCredentials } from './imagetypes';

/**
 * A registry login; `remember` keeps it in the server's memory for later
 * pulls (never on disk).
 */
export interface IRegistryLogin extends IRegistryCredentials {
  remember: boolean;
}

/**
 * The login form: why it is asked, a hint for the registry, the username,
 * the password and whether to remember them.
 */
export class LoginForm extends FormDialogBody<IRegistryLogin, IRegistryLogin> {
  constructor(registry: string, reason: string, trans: TranslationBundle) {
    super({
      initial: { username: '', password: '', remember: true },
      render: props => (
        <LoginFields
          registry={registry}
          reason={reason}
          trans={trans}
          {...props}
        />
      ),
      value: state => ({ ...state, username: state.username.trim() })
    });
  }
}

export function LoginFields(
  props: IFormProps<IRegistryLogin> & {
    registry: string;
    reason: string;
    trans: TranslationBundle;
  }
): JSX.Element {
  const { registry, reason, trans, state, change } = props;
  return (
    <form className="jgc-login" onSubmit={event => event.preventDefault()}>
      <p className="jgc-note">{reason}</p>
      <p className="jgc-subtle">
        {registry === 'nvcr.io'
          ? trans.__(
              'For NGC the username is $oauthtoken and the password is your API key.'
            )
          : trans.__('Your login for %1.', registry)}
      </p>
      <label className="jgc-field">
        {trans.__('Username')}
        <input
          type="text"
          autoComplete="username"
          className="jp-mod-styled"
          required
          value={state.username}
          onChange={event => change({ username: event.target.value })}
        />
      </label>
      <label className="jgc-field">
        {trans.__('Password or token')}
        <input
          type="password"
          autoComplete="current-password"
          className="jp-mod-styled"
          required
          value={state.password}
          onChange={event => change({ password: event.target.value })}
        />
      </label>
      <label>
        <input
          type="checkbox"
          className="jp-mod-styled"
          checked={state.remember}
          onChange={event => change({ remember: event.target.checked })}
        />{' '}
        {trans.__('Remember for this server session (kept in memory only)')}
      </label>
    </form>
  );
}

/**
 * Ask for a login to `registry`, explaining `reason` (the server's
 * sentence). When "remember" is ticked the login is stored on the server
 * first. Resolves with the credentials to retry with, or `null` when the
 * user gives up.
 */
export async function askRegistryLogin(
  registry: string,
  reason: string,
  trans: TranslationBundle
): Promise<IRegistryCredentials | null> {
  const login = await showFormDialog({
    title: trans.__('Log in to %1', registry),
    body: new LoginForm(registry, reason, trans),
    accept: trans.__('Pull'),
    focusNodeSelector: 'input'
  });
  if (!login || !login.username) {
    return null;
  }
  if (login.remember) {
    await putRegistryCredentials(
      registry,
      login.username,
      login.password,
      undefined,
      trans
    );
  }
  return { username: login.username, password: login.password };
}
