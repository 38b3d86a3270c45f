/**
 * A build of an image from the workspace, in its own tab: where it is, its
 * whole log (following its end while it runs), its cancel, and its end; and
 * the form that starts one (a name, and for a requirements.txt its base).
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { BuildModel } from './buildmodel';
import type { IFormProps } from './dialogs';
import { ModelWidget } from './modelwidget';
import { formatBytes } from './format';
import type { ISave } from './savetypes';

/**
 * Where a build is, in words.
 */
export function buildProgress(trans: TranslationBundle, build: ISave): string {
  switch (build.state) {
    case 'queued':
      return build.position > 0
        ? trans.__(
            'Waiting for a free slot: %1 in the queue (others are saving or building images)…',
            build.position
          )
        : trans.__('Waiting to start…');
    case 'copying':
      return trans.__(
        'Sending the folder: %1 files, %2…',
        build.files,
        formatBytes(build.bytes)
      );
    case 'building':
      return build.files
        ? trans.__(
            'Building (the folder: %1 files, %2)…',
            build.files,
            formatBytes(build.bytes)
          )
        : trans.__('Building…');
    case 'done':
      return trans.__(
        'Built %1. New notebooks can start on it from the Launcher; it is yours alone.',
        build.image
      );
    case 'cancelled':
      return trans.__('Cancelled: nothing was kept.');
    default:
      return build.message || trans.__('The build failed.');
  }
}

/**
 * The log, following its end while the build runs, unless the reader
 * scrolled up to read it.
 */
function BuildLog(props: { lines: string[]; active: boolean }): JSX.Element {
  const ref = React.useRef<HTMLPreElement>(null);
  const pinned = React.useRef(true);
  React.useEffect(() => {
    const node = ref.current;
    if (node && pinned.current) {
      node.scrollTop = node.scrollHeight;
    }
  }, [props.lines.length, props.active]);
  return (
    <pre
      ref={ref}
      className="jgc-kernel-log jgc-build-log"
      onScroll={event => {
        const node = event.currentTarget;
        pinned.current =
          node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
      }}
    >
      {props.lines.join('\n')}
    </pre>
  );
}

export function BuildViewBody(props: {
  model: BuildModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const build = model.build;
  const failed = build.state === 'error';
  return (
    <div className="jgc-build-view">
      <h2>{trans.__('Build of %1', build.recipe)}</h2>
      <p className="jgc-note">
        {trans.__('Into %1, on %2.', build.image, build.base || '—')}
      </p>
      <div
        className={`jgc-save-state jgc-save-${build.state}`}
        role={failed ? 'alert' : 'status'}
      >
        <p className="jgc-build-progress">{buildProgress(trans, build)}</p>
      </div>
      {model.active && (
        <button
          type="button"
          className="jp-mod-styled jp-mod-warn jgc-build-cancel"
          disabled={model.asking}
          onClick={() => void model.cancel()}
        >
          {trans.__('Cancel Build')}
        </button>
      )}
      {model.error && (
        <p className="jgc-banner jgc-banner-error" role="alert">
          {model.error}
        </p>
      )}
      <h3>{trans.__('Log')}</h3>
      {build.log.length > 0 ? (
        <BuildLog lines={build.log} active={model.active} />
      ) : (
        <p className="jgc-note">{trans.__('Nothing yet.')}</p>
      )}
    </div>
  );
}

export class BuildViewWidget extends ModelWidget<BuildModel> {
  constructor(model: BuildModel, trans: TranslationBundle) {
    super(
      model,
      m => <BuildViewBody model={m} trans={trans} />,
      'jgc-build-view-widget'
    );
  }
}

/**
 * The form's state: the image's name, and a requirements.txt's base.
 */
export interface IBuildForm {
  name: string;
  base: string;
}

/**
 * The "Build Image…" form of `recipe`: the new image's name and, for a
 * requirements.txt, the image to install it into (`bases`).
 */
export function BuildForm(
  props: IFormProps<IBuildForm> & {
    recipe: string;
    requirements: boolean;
    bases: string[];
    trans: TranslationBundle;
  }
): JSX.Element {
  const { state, change, trans } = props;
  return (
    <div className="jgc-build-form">
      <p>
        {props.requirements
          ? trans.__(
              'Installs the packages %1 names into an image of your choice, as a new image of your own (hidden from other users). Its folder is sent with it: a requirement may name a wheel there.',
              props.recipe
            )
          : trans.__(
              'Builds %1 as a new image of your own (hidden from other users), its folder the build context. Its bases must be images this server allows.',
              props.recipe
            )}
      </p>
      <label>
        {trans.__('Name')}{' '}
        <input
          className="jp-mod-styled jgc-build-name"
          type="text"
          value={state.name}
          maxLength={64}
          placeholder={trans.__("the folder's name")}
          onChange={event => change({ name: event.currentTarget.value })}
        />
      </label>
      {props.requirements && (
        <label>
          {trans.__('Install into')}{' '}
          <select
            className="jp-mod-styled jgc-build-base"
            value={state.base}
            onChange={event => change({ base: event.currentTarget.value })}
          >
            {props.bases.map(ref => (
              <option key={ref} value={ref}>
                {ref}
              </option>
            ))}
          </select>
        </label>
      )}
    </div>
  );
}
