/**
 * The extension's dialogs, all in one style: a ReactWidget body shown by
 * @jupyterlab/apputils' showDialog. A form keeps its state in React; the
 * dialog reads its value from that state when a button is pressed.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

/**
 * What a form's render function is given: its state, and how to change it.
 */
export interface IFormProps<S> {
  state: S;
  change(patch: Partial<S>): void;
}

/**
 * The body of a dialog with a form: draws `render(state)`, and gives
 * `value(state)` as the dialog's value.
 */
export class FormDialogBody<S extends object, V>
  extends ReactWidget
  implements Dialog.IBodyWidget<V>
{
  constructor(options: FormDialogBody.IOptions<S, V>) {
    super();
    if (options.className) {
      this.addClass(options.className);
    }
    this._state = options.initial;
    this._render = options.render;
    this._value = options.value;
  }

  /**
   * The form's state now.
   */
  get state(): S {
    return this._state;
  }

  getValue(): V {
    return this._value(this._state);
  }

  render(): JSX.Element {
    return (
      <FormState
        initial={this._state}
        render={this._render}
        onChange={state => {
          this._state = state;
        }}
      />
    );
  }

  private _state: S;
  private readonly _render: (props: IFormProps<S>) => JSX.Element;
  private readonly _value: (state: S) => V;
}

export namespace FormDialogBody {
  export interface IOptions<S, V> {
    /**
     * A class for the body's node.
     */
    className?: string;
    /**
     * The form's first state.
     */
    initial: S;
    /**
     * Draw the form.
     */
    render: (props: IFormProps<S>) => JSX.Element;
    /**
     * The dialog's value for a state.
     */
    value: (state: S) => V;
  }
}

/**
 * Holds a form's state: the body reads the latest at once, React redraws
 * with it.
 */
function FormState<S extends object>(props: {
  initial: S;
  render: (props: IFormProps<S>) => JSX.Element;
  onChange: (state: S) => void;
}): JSX.Element {
  const latest = React.useRef(props.initial);
  const [state, setState] = React.useState(props.initial);
  const change = (patch: Partial<S>): void => {
    latest.current = { ...latest.current, ...patch };
    props.onChange(latest.current);
    setState(latest.current);
  };
  return props.render({ state, change });
}

/**
 * Show a dialog with a form, with Cancel and `accept` buttons. Resolves with
 * the form's value, or `null` when the dialog is not accepted.
 */
export async function showFormDialog<V>(options: {
  title: string;
  body: Dialog.IBodyWidget<V>;
  accept: string;
  focusNodeSelector?: string;
}): Promise<V | null> {
  const result = await showDialog<V>({
    title: options.title,
    body: options.body,
    buttons: [
      Dialog.cancelButton(),
      Dialog.okButton({ label: options.accept })
    ],
    focusNodeSelector: options.focusNodeSelector
  });
  return result.button.accept ? result.value : null;
}

/**
 * Ask to confirm an action that loses something: a sentence, with Cancel
 * and a warning `action` button. Resolves with whether it was confirmed.
 */
export async function confirmDialog(options: {
  title: string;
  body: string;
  action: string;
}): Promise<boolean> {
  const result = await showDialog({
    title: options.title,
    body: <>{options.body}</>,
    buttons: [
      Dialog.cancelButton(),
      Dialog.warnButton({ label: options.action })
    ]
  });
  return result.button.accept;
}
