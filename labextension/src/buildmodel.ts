/**
 * A build of an image from the user's workspace (a Dockerfile, or a
 * requirements.txt), followed in its own tab: its state and whole log, read
 * again every second while it runs, and its cancel (savefollow.ts).
 */
import { IFollowOptions, SaveFollower } from './savefollow';
import { ISave } from './savetypes';

/**
 * What a file of the workspace can be built from: "dockerfile",
 * "requirements", or '' (the server's own rule: images/recipes.py).
 */
export function recipeKind(name: string): 'dockerfile' | 'requirements' | '' {
  if (name === 'requirements.txt') {
    return 'requirements';
  }
  if (/^(Dockerfile(\.[^/]*)?|[^/]+\.[Dd]ockerfile)$/.test(name)) {
    return 'dockerfile';
  }
  return '';
}

export interface IBuildModelOptions extends IFollowOptions {
  build: ISave;
}

export class BuildModel extends SaveFollower {
  constructor(options: IBuildModelOptions) {
    super(options);
    this.save = options.build;
    this.follow();
  }

  /**
   * The build as last read.
   */
  get build(): ISave {
    return this.save!;
  }

  set build(value: ISave) {
    this.save = value;
  }
}
