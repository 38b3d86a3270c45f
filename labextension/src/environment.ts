/**
 * What a notebook ran on, kept in the notebook (issue 31): at each start of
 * its kernel the notebook's metadata records the environment stamp (image,
 * content digest, framework, CUDA, Python, the verdict on its GPUs), and a
 * notebook whose image's tag names other content now than its stamp records
 * asks its reader which to run: the recorded content (the notebook is pinned
 * to its digest, `image_digest`, which the kernel's start reads) or the tag's
 * new content. Never a silent switch: until the reader chooses, the stamp is
 * not overwritten.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { getNotebookKernelState, messageOf } from './api';
import { environmentStampOf } from './environmentreaders';
import {
  IEnvironmentStamp,
  INotebookRetiredImage,
  INotebookStampCheck
} from './environmenttypes';
import { notify } from './notify';
import { askRetired, dismissKernelSelection, moveNotebook } from './retired';
import type { IGpuContainersModel } from './tokens';
import { sectionOf, setInSection } from './metadatakeys';
import { repositoryOf } from './imageformat';
import { describeStamp, shortDigest } from './stampformat';

export { describeStamp, repositoryOf, shortDigest };

/**
 * The stamp's key and the pin's, under the notebook's `gpu_containers`.
 */
export const STAMP_KEY = 'environment';
export const PIN_KEY = 'image_digest';

/**
 * The stamp a notebook's metadata holds, or `null`.
 */
export function notebookStamp(
  metadata: Record<string, unknown> | undefined
): IEnvironmentStamp | null {
  return environmentStampOf(sectionOf(metadata)[STAMP_KEY]);
}

/**
 * The digest a notebook pins its image to, or `''`.
 */
export function notebookPin(
  metadata: Record<string, unknown> | undefined
): string {
  const pin = sectionOf(metadata)[PIN_KEY];
  return typeof pin === 'string' ? pin : '';
}

/**
 * Whether two stamps record the same environment (each field, in order).
 */
export function sameStamp(
  a: IEnvironmentStamp | null,
  b: IEnvironmentStamp | null
): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * A saved stamp whose tag names other content now.
 */
export interface IMovedTag extends INotebookStampCheck {
  recorded: IEnvironmentStamp;
}

/**
 * What the reader chose for a notebook whose tag moved.
 */
export type StampChoice = 'recorded' | 'new' | 'later';

/**
 * Ask which content a notebook whose tag moved should run.
 */
export async function askMovedTag(
  trans: TranslationBundle,
  check: IMovedTag
): Promise<StampChoice> {
  const recorded = check.recorded;
  const canKeep = check.pinnable;
  const body = [
    trans.__('This notebook last ran on %1.', describeStamp(trans, recorded)),
    trans.__(
      'On this server, %1 now names other content (%2).',
      recorded.image,
      shortDigest(check.tag_digest)
    ),
    canKeep
      ? check.recorded_present
        ? trans.__(
            'Its kernel can run the content the notebook last ran on, or the new content of the tag.'
          )
        : trans.__(
            'The content it last ran on is not on this server: it can be pulled by its digest, or the kernel can run the new content of the tag.'
          )
      : trans.__(
          'The content it last ran on was built locally and is no longer kept on this server, so it cannot be run again: its kernel runs the new content of the tag.'
        )
  ].join(' ');
  const keep = check.recorded_present
    ? trans.__('Run the Recorded Content')
    : trans.__('Pull and Run the Recorded Content');
  const buttons = [
    Dialog.cancelButton({ label: trans.__('Decide Later') }),
    Dialog.okButton({
      label: trans.__('Use the New Content'),
      actions: ['new']
    }),
    ...(canKeep
      ? [Dialog.okButton({ label: keep, actions: ['recorded'] })]
      : [])
  ];
  const result = await showDialog({
    title: trans.__("This Notebook's Image Has Changed"),
    body,
    buttons,
    defaultButton: buttons.length - 1
  });
  if (!result.button.accept) {
    return 'later';
  }
  return result.button.actions.includes('recorded') ? 'recorded' : 'new';
}

/**
 * One notebook's stamp and pin, kept as its kernel starts (one per notebook
 * panel; disposed with it).
 */
export class NotebookEnvironment {
  constructor(
    private readonly _panel: NotebookPanel,
    private readonly _model: IGpuContainersModel,
    private readonly _trans: TranslationBundle,
    private readonly _ask: typeof askMovedTag = askMovedTag,
    private readonly _askRetired: typeof askRetired = askRetired
  ) {
    const context = _panel.sessionContext;
    context.statusChanged.connect(this._onStatus, this);
    _panel.disposed.connect(this._dispose, this);
    // The kernel JupyterLab starts on opening must not record its stamp over
    // the saved one before the saved one was compared.
    this._checked = _panel.context.ready
      .then(() => this.checkSaved())
      .catch(() => undefined); // a notebook that did not load: nothing to compare
  }

  /**
   * Emitted when the kernel's environment or the notebook's check changes.
   */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * What the notebook's kernel runs on now (`null`: not known yet).
   */
  get current(): IEnvironmentStamp | null {
    return this._current;
  }

  /**
   * The notebook's image, retired by the administrator or gone, while the
   * reader has not moved it; else `null`.
   */
  get retired(): INotebookRetiredImage | null {
    return this._retired;
  }

  /**
   * The saved stamp against the server's images, when its tag moved and the
   * reader has not chosen yet; else `null`.
   */
  get undecided(): IMovedTag | null {
    return this._undecided;
  }

  /**
   * Compare the saved stamp with what its tag names now, and ask the reader
   * (without waiting for the answer) when the tag moved and the notebook is
   * not pinned to the recorded content.
   */
  async checkSaved(): Promise<void> {
    const path = this._panel.context.path;
    let state;
    try {
      state = await getNotebookKernelState(
        path,
        this._model.serverSettings,
        this._trans
      );
    } catch {
      return; // an older server, or none: nothing to compare
    }
    if (state.retired) {
      if (state.retired.state === 'removed') {
        // JupyterLab asks its own question as the notebook opens when its kernel spec is
        // gone ("Select Kernel": the document context launches it once the session
        // context's initialization says so; `ready` waits for the answer). The move's
        // question answers it, one question at a time: once initialized (the same promise
        // the context waits on) and the context's own continuation has run, it goes.
        await this._panel.sessionContext.initialize();
        await new Promise(resolve => setTimeout(resolve, 0));
        dismissKernelSelection(this._panel);
      }
      // Moving is the question; which content of the old image to run is not.
      this._retired = state.retired;
      this._changed.emit();
      void this.decideRetired();
      return;
    }
    const check = state.stamp;
    const recorded = check?.recorded;
    if (check?.moved) {
      // The tag names other content now: the catalog is read now (not at its next
      // minute), and with it the page's kernel specs, which described the old
      // content (specfollow.ts: a GPU build may have become a CPU build).
      void this._model.refreshImages();
    }
    if (
      !check ||
      !recorded ||
      !check.moved ||
      (check.pin && shortDigest(check.pin) === shortDigest(recorded.digest))
    ) {
      return;
    }
    this._undecided = { ...check, recorded };
    this._changed.emit();
    void this.decide();
  }

  /**
   * Ask again (the toolbar's note of an undecided notebook calls this).
   */
  async decide(): Promise<void> {
    const check = this._undecided;
    if (!check || this._asking) {
      return;
    }
    this._asking = true;
    try {
      const choice = await this._ask(this._trans, check);
      if (choice === 'later') {
        return;
      }
      this._undecided = null;
      this._changed.emit();
      if (choice === 'recorded') {
        await this._runRecorded(check);
      } else {
        setInSection(this._panel.model, PIN_KEY, null);
        // A notebook left without a kernel meanwhile ("No Kernel" in
        // JupyterLab's own question as it opened) starts on the new content.
        const context = this._panel.sessionContext;
        const name = this._kernelName();
        if (!context.session && name) {
          await this._panel.context.save();
          await context.changeKernel({ name });
        }
        await this._stampNow();
      }
    } finally {
      this._asking = false;
    }
  }

  /**
   * Ask again whether the notebook moves off its retired or removed image
   * (the toolbar's note calls this).
   */
  async decideRetired(): Promise<void> {
    const retired = this._retired;
    if (!retired || this._asking) {
      return;
    }
    this._asking = true;
    try {
      if ((await this._askRetired(this._trans, retired)) !== 'move') {
        return;
      }
      const moved = await moveNotebook(
        this._panel,
        this._model,
        this._trans,
        retired,
        PIN_KEY
      );
      if (moved) {
        this._retired = null;
        this._changed.emit();
      }
    } finally {
      this._asking = false;
    }
  }

  /**
   * Pin the notebook to the recorded content and start its kernel again on
   * it (pulled first when the server lacks it).
   */
  private async _runRecorded(check: IMovedTag): Promise<void> {
    const trans = this._trans;
    // The server's pin (a registry digest, or content built on it that it kept).
    const digest = check.pin_reference || check.recorded.digest;
    if (!check.recorded_present) {
      try {
        const pull = await this._model.pull(digest);
        if (pull.state !== 'done') {
          notify(
            trans,
            'error',
            pull.message,
            trans.__('The recorded content %1 was not pulled', digest)
          );
          this._undecided = check;
          this._changed.emit();
          return;
        }
      } catch (e) {
        notify(
          trans,
          'error',
          messageOf(e),
          trans.__('The recorded content %1 was not pulled', digest)
        );
        this._undecided = check;
        this._changed.emit();
        return;
      }
    }
    setInSection(this._panel.model, PIN_KEY, digest);
    // The kernel's start reads the saved notebook: save, then a new kernel.
    await this._panel.context.save();
    const context = this._panel.sessionContext;
    const name = this._kernelName();
    if (name) {
      await context.changeKernel({ name });
    }
  }

  /**
   * The kernel spec the notebook runs on: its kernel's, else the one it
   * names (a notebook left without a kernel as it opened).
   */
  private _kernelName(): string {
    const running = this._panel.sessionContext.session?.kernel?.name;
    if (running) {
      return running;
    }
    const spec = this._panel.model?.getMetadata('kernelspec') as
      { name?: unknown } | undefined;
    return typeof spec?.name === 'string' ? spec.name : '';
  }

  private _onStatus(): void {
    const status = this._panel.sessionContext.kernelDisplayStatus;
    if (
      this._lastStatus !== 'idle' &&
      this._lastStatus !== 'busy' &&
      status === 'idle'
    ) {
      void this._stampNow();
    }
    this._lastStatus = status;
  }

  /**
   * Read what the kernel runs on and record it in the notebook, unless the
   * reader has yet to choose between the recorded content and the new.
   */
  private async _stampNow(): Promise<void> {
    await this._checked;
    let state;
    try {
      state = await getNotebookKernelState(
        this._panel.context.path,
        this._model.serverSettings,
        this._trans
      );
    } catch {
      return;
    }
    const stamp = state.kernel?.environment ?? null;
    this._current = stamp;
    this._changed.emit();
    if (!stamp || this._undecided || this._panel.isDisposed) {
      return;
    }
    const model = this._panel.model;
    if (!model) {
      return;
    }
    // A notebook nothing was changed in stays unmodified (a new one opens
    // clean): the record is saved with the notebook's next save, as the
    // outputs of the code its kernel runs are.
    const clean = !model.dirty;
    // Switched to another image since it was pinned: the pin was not this
    // kernel's (the server ran the tag), and goes.
    const pin = notebookPin(model.metadata);
    if (pin && repositoryOf(pin) !== repositoryOf(stamp.image)) {
      setInSection(model, PIN_KEY, null);
    }
    if (!sameStamp(notebookStamp(model.metadata), stamp)) {
      setInSection(model, STAMP_KEY, stamp);
    }
    if (clean) {
      model.dirty = false;
    }
  }

  private _dispose(): void {
    this._panel.sessionContext.statusChanged.disconnect(this._onStatus, this);
    Signal.clearData(this);
  }

  private readonly _checked: Promise<void>;
  private _current: IEnvironmentStamp | null = null;
  private _undecided: IMovedTag | null = null;
  private _retired: INotebookRetiredImage | null = null;
  private _asking = false;
  private _lastStatus = '';
  private readonly _changed = new Signal<this, void>(this);
}

const environments = new WeakMap<NotebookPanel, NotebookEnvironment>();

/**
 * The one NotebookEnvironment of a notebook panel, made on first use (by the
 * plugin for each notebook it sees, or by the notebook's toolbar item).
 */
export function environmentOf(
  panel: NotebookPanel,
  model: IGpuContainersModel,
  trans: TranslationBundle
): NotebookEnvironment {
  let found = environments.get(panel);
  if (!found) {
    found = new NotebookEnvironment(panel, model, trans);
    environments.set(panel, found);
  }
  return found;
}
