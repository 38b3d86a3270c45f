/**
 * A main-area view of a model that signals its changes: drawn again at each,
 * and the model disposed with the view (a kernel's view, a build's tab).
 */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import type { ISignal } from '@lumino/signaling';
import * as React from 'react';

export interface IViewModel {
  readonly changed: ISignal<any, void>;
  dispose(): void;
}

export class ModelWidget<M extends IViewModel> extends ReactWidget {
  constructor(
    readonly model: M,
    private readonly _body: (model: M) => JSX.Element,
    className: string
  ) {
    super();
    this.addClass(className);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => this._body(this.model)}
      </UseSignal>
    );
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model.dispose();
    super.dispose();
  }
}
