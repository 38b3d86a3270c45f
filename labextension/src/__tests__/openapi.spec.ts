/// <reference types="node" />
/**
 * The type modules against the REST API's contract, jupyter_gpu_containers/openapi.yaml. The
 * type modules are every `*types.ts` module of labextension/src (gputypes.ts, imagetypes.ts,
 * kerneltypes.ts, sharingtypes.ts: the shapes split by resource), read as one.
 *
 * Every interface of the type modules mirrors a schema of `components.schemas` (the table below
 * says which): it must have the same properties, optional exactly where the schema does not
 * require them, of the same types where those are simple (primitives, nullability, enums, arrays,
 * maps and references to other mirrored schemas). The type modules are read with the TypeScript
 * compiler API, openapi.yaml with js-yaml. When the two disagree, openapi.yaml is the contract:
 * fix the type module.
 */
import * as fs from 'fs';
import * as path from 'path';

import { load } from 'js-yaml';
import * as ts from 'typescript';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const OPENAPI = path.join(ROOT, 'jupyter_gpu_containers', 'openapi.yaml');
const SOURCES = path.join(ROOT, 'labextension', 'src');

/**
 * The type modules, by file name: the TypeScript shapes of the server's documents.
 */
const TYPE_MODULES = Object.fromEntries(
  fs
    .readdirSync(SOURCES)
    .filter(name => name.endsWith('types.ts'))
    .sort()
    .map(name => [name, fs.readFileSync(path.join(SOURCES, name), 'utf8')])
);

/**
 * Each interface of the type modules and the schemas it mirrors: names in `components.schemas`, or a
 * path to an object that a schema describes inline: `Schema.property` (deeper as
 * `Schema.property.property`), `[]` after a name for the items of an array.
 */
const INTERFACES: Record<string, string[]> = {
  IStatus: ['Status'],
  IEngineStatus: ['EngineStatus'],
  IGpuReport: ['GPUReport'],
  IGpuDevice: ['GPU'],
  IGpu: ['GPUWithHolders'],
  IGpuQuota: ['GPUQuota'],
  IPackages: ['Packages'],
  IPackagesFolder: ['PackagesFolder'],
  ISave: ['Save'],
  ISaves: ['Saves'],
  IHolder: ['Holder'],
  IVerdict: ['Verdict'],
  IClusterView: ['ClusterView'],
  INodePool: ['NodePool'],
  IClusterNode: ['ClusterNode'],
  IClusterNodeResource: ['ClusterNode.resources[]'],
  IClusterHolder: ['ClusterHolder'],
  IPoolVerdict: ['NodePool.verdicts[]'],
  IImageRow: ['CatalogRow'],
  ICatalogHost: ['CatalogHost'],
  ICatalog: ['Catalog'],
  IImagesDiskUse: ['ImagesDiskUse'],
  IPull: ['Pull'],
  IPullLayer: ['PullLayer'],
  IPullRequest: ['PullRequest'],
  IRegistryCredentials: ['RegistryLogin', 'PullRequest.auth'],
  INotebookKernelRequest: ['NotebookKernelRequest'],
  INotebookKernelReply: ['NotebookKernelReply'],
  ISession: ['Session'],
  ISessionKernel: ['Session.kernel'],
  IKernelGpu: ['KernelGPU'],
  IKernelGpuSample: ['KernelGPUSample'],
  IKernelGpuUsage: ['KernelGPUUsage'],
  IKernelSummary: ['KernelSummary'],
  IKernelDataset: ['KernelDataset'],
  IKernelList: ['KernelList'],
  IKernelReclaim: ['KernelReclaim'],
  IReclaimKeepOffer: ['KernelReclaim.keep'],
  IKernelEnd: ['KernelEnd'],
  IKernelImage: ['KernelImage'],
  IKernelContainer: ['KernelContainer'],
  IKernelMount: ['KernelMount'],
  IKernelPhase: ['KernelPhase'],
  IKernelView: ['KernelView'],
  IKernelLogContainer: ['KernelLogContainer'],
  IKernelLogLine: ['KernelLogLine'],
  IKernelLogLines: ['KernelLogLines'],
  IKernelLogEnded: ['KernelLogEnded'],
  IKernelLogShutdown: ['KernelLogShutdown'],
  IQueuedStart: ['QueuedStart'],
  IGpuQueue: ['GPUQueue'],
  IAdminNotice: ['AdminNotice'],
  IAdminNotices: ['AdminNotices'],
  IAdminActionReply: ['AdminActionReply'],
  IAdminView: ['AdminView'],
  IAdminGpu: ['AdminView.gpus[]'],
  IAdminQueue: ['AdminView.queue'],
  IAdminQueuedStart: ['AdminView.queue.queue[]'],
  IAdminQuotas: ['AdminView.quotas'],
  IAdminQuotaUser: ['AdminView.quotas.users[]'],
  IAdminHolder: ['AdminHolder'],
  IAdminHolderGpu: ['AdminHolder.gpus[]'],
  IAdminHolderActivity: ['AdminHolder.activity'],
  IPrePulls: ['PrePulls'],
  IPrePullEntry: ['PrePullEntry'],
  IPrePullRun: ['PrePullRun'],
  IPruning: ['Pruning'],
  IPruningRun: ['Pruning.last_run'],
  IPrunedImage: ['PrunedImage'],
  IEnvironmentStamp: ['EnvironmentStamp'],
  IEnvironmentVerdict: ['EnvironmentStamp.verdict'],
  INotebookStampCheck: ['NotebookStampCheck'],
  INotebookRetiredImage: ['NotebookRetiredImage'],
  IImageRetirement: ['ImageRetirement'],
  IImageLineage: ['ImageLineage'],
  INotebookKernelState: ['NotebookKernelState'],
  INotebookKernelStateKernel: ['NotebookKernelState.kernel'],
  INotebookKernelGpu: ['NotebookKernelState.kernel.gpus[]']
};

/**
 * Each type alias of the type modules and the schema it mirrors. An alias of an enum is compared value
 * by value; one of an opaque schema only by name.
 */
const ALIASES: Record<string, string> = {
  InventorySource: 'InventorySource',
  VerdictOutcome: 'Verdict.outcome',
  PullState: 'Pull.state',
  GpuRequest: 'GPURequest',
  ReclaimState: 'KernelReclaim.state',
  AdminAction: 'AdminNotice.action',
  StoredGpuRequest: 'StoredGPURequest'
};

/**
 * Schemas compared by name only: `GPURequest` is a oneOf of a count, a string and a list that
 * the server accepts; the front end sends and reads a narrower `GpuRequest`.
 */
const OPAQUE = new Set(['GPURequest', 'StoredGPURequest']);

/**
 * The part of an OpenAPI 3.0 schema object the comparison reads.
 */
interface ISchema {
  $ref?: string;
  type?: string;
  enum?: unknown[];
  nullable?: boolean;
  required?: string[];
  properties?: Record<string, ISchema>;
  additionalProperties?: boolean | ISchema;
  items?: ISchema;
  allOf?: ISchema[];
  oneOf?: ISchema[];
  anyOf?: ISchema[];
}

/**
 * A type as a sorted list of atoms, one per member of a union: `string`, `number`, `boolean`,
 * `null`, a string literal (`"native"`), `ref:<name>` (a mirrored schema, by the interface
 * that mirrors it; an opaque one by its own name), `array<...>`, `map<...>`, `object` (an
 * inline object), or `unknown:<text>` for what the comparison does not understand.
 */
type Atoms = string[];

function union(parts: Atoms[]): Atoms {
  return [...new Set(parts.flat())].sort();
}

function text(atoms: Atoms): string {
  return atoms.join(' | ');
}

/**
 * The schemas of an OpenAPI document, and the shapes of their types.
 */
class Contract {
  constructor(source: string) {
    const document = load(source) as {
      components?: { schemas?: Record<string, ISchema> };
    };
    this.schemas = document.components?.schemas ?? {};
  }

  readonly schemas: Record<string, ISchema>;

  /**
   * The schema at `at` (`Name`, `Name.property`, ..., `[]` for an array's items), or
   * `undefined`.
   */
  find(at: string): ISchema | undefined {
    const [name, ...path] = at.split('.');
    let schema: ISchema | undefined = this.schemas[name];
    for (const step of path) {
      const property = step.replace(/(\[\])+$/, '');
      schema = this.members(schema ?? {}).properties[property];
      for (
        let depth = (step.length - property.length) / 2;
        depth > 0;
        depth--
      ) {
        schema = schema?.items;
      }
    }
    return schema;
  }

  /**
   * The properties of `schema` and the names it requires, those of its `$ref` and of each
   * `allOf` member included.
   */
  members(schema: ISchema): {
    properties: Record<string, ISchema>;
    required: string[];
  } {
    if (schema.$ref !== undefined) {
      return this.members(
        this.schemas[schema.$ref.replace('#/components/schemas/', '')] ?? {}
      );
    }
    const properties = { ...(schema.properties ?? {}) };
    const required = [...(schema.required ?? [])];
    for (const member of schema.allOf ?? []) {
      const found = this.members(member);
      Object.assign(properties, found.properties);
      required.push(...found.required);
    }
    return { properties, required };
  }

  /**
   * The atoms of `schema`, found at `at` (`''` when it has no name of its own).
   * A schema that an interface mirrors is `ref:<at>`.
   */
  shape(schema: ISchema, at = ''): Atoms {
    let atoms: Atoms;
    if (at !== '' && MIRRORED.has(at)) {
      atoms = [`ref:${MIRRORED.get(at)}`];
    } else if (schema.$ref !== undefined) {
      const name = schema.$ref.replace('#/components/schemas/', '');
      const target = this.schemas[name];
      // A mirrored schema that is nullable itself (OpenAPI 3.0's way to allow
      // null where it is referenced) is its interface or null.
      atoms =
        MIRRORED.has(name) || OPAQUE.has(name) || !target
          ? target?.nullable
            ? union([[`ref:${MIRRORED.get(name) ?? name}`], ['null']])
            : [`ref:${MIRRORED.get(name) ?? name}`]
          : this.shape(target, name);
    } else if (schema.allOf?.length === 1) {
      atoms = this.shape(schema.allOf[0]);
    } else if (schema.oneOf || schema.anyOf) {
      atoms = union(
        (schema.oneOf ?? schema.anyOf ?? []).map(member => this.shape(member))
      );
    } else {
      atoms = this._typeShape(schema, at);
    }
    return schema.nullable ? union([atoms, ['null']]) : atoms;
  }

  private _typeShape(schema: ISchema, at: string): Atoms {
    if (schema.enum?.length && schema.enum.every(value => value === null)) {
      // OpenAPI 3.0's way to write null alone (beside a type it needs).
      return ['null'];
    }
    switch (schema.type) {
      case 'string':
        return schema.enum
          ? union([schema.enum.map(value => JSON.stringify(value))])
          : ['string'];
      case 'integer':
      case 'number':
        return ['number'];
      case 'boolean':
        return ['boolean'];
      case 'array':
        return [
          `array<${text(this.shape(schema.items ?? {}, at === '' ? '' : `${at}[]`))}>`
        ];
      case 'object':
        if (
          !schema.properties &&
          typeof schema.additionalProperties === 'object'
        ) {
          return [`map<${text(this.shape(schema.additionalProperties))}>`];
        }
        return ['object'];
      default:
        return [`unknown:${JSON.stringify(schema)}`];
    }
  }
}

/**
 * A property of an interface: whether it is optional, and its type.
 */
interface IProperty {
  optional: boolean;
  type: ts.TypeNode | undefined;
}

/**
 * The interfaces and type aliases of TypeScript source files (the type modules), by file name,
 * read as one: an interface may extend, and a property name, a declaration of another.
 */
class TypeModules {
  constructor(files: Record<string, string>) {
    for (const [fileName, source] of Object.entries(files)) {
      const file = ts.createSourceFile(
        fileName,
        source,
        ts.ScriptTarget.Latest,
        true
      );
      for (const statement of file.statements) {
        if (
          ts.isInterfaceDeclaration(statement) ||
          ts.isTypeAliasDeclaration(statement)
        ) {
          const name = statement.name.text;
          if (this.interfaces.has(name) || this.aliases.has(name)) {
            this.duplicates.push(`${name} (${fileName})`);
          }
          if (ts.isInterfaceDeclaration(statement)) {
            this.interfaces.set(name, statement);
          } else {
            this.aliases.set(name, statement);
          }
        }
      }
    }
  }

  readonly interfaces = new Map<string, ts.InterfaceDeclaration>();
  readonly aliases = new Map<string, ts.TypeAliasDeclaration>();

  /**
   * Declarations whose name another file (or the same) declared already.
   */
  readonly duplicates: string[] = [];

  /**
   * The file that declares interface or alias `name` (for sentences).
   */
  fileOf(name: string): string {
    const declaration = this.interfaces.get(name) ?? this.aliases.get(name);
    return declaration?.getSourceFile().fileName ?? 'the type modules';
  }

  /**
   * The properties of interface `name`, its bases' included; `problems` gets what is not a
   * plain property.
   */
  properties(name: string, problems: string[]): Map<string, IProperty> {
    const found = new Map<string, IProperty>();
    const declaration = this.interfaces.get(name);
    if (!declaration) {
      problems.push(`${name}: no such interface in the type modules`);
      return found;
    }
    for (const clause of declaration.heritageClauses ?? []) {
      for (const base of clause.types) {
        const baseName = base.expression.getText();
        for (const [key, value] of this.properties(baseName, problems)) {
          found.set(key, value);
        }
      }
    }
    for (const member of declaration.members) {
      if (!ts.isPropertySignature(member)) {
        problems.push(
          `${name}: a member that is not a property: ${member.getText()}`
        );
        continue;
      }
      const key = ts.isIdentifier(member.name)
        ? member.name.text
        : member.name.getText().replace(/^['"]|['"]$/g, '');
      found.set(key, { optional: !!member.questionToken, type: member.type });
    }
    return found;
  }

  /**
   * The atoms of a type written in a type module.
   */
  shape(node: ts.TypeNode | undefined): Atoms {
    if (!node) {
      return ['unknown:untyped'];
    }
    if (ts.isParenthesizedTypeNode(node)) {
      return this.shape(node.type);
    }
    if (ts.isUnionTypeNode(node)) {
      return union(node.types.map(member => this.shape(member)));
    }
    if (ts.isLiteralTypeNode(node)) {
      const literal = node.literal;
      if (literal.kind === ts.SyntaxKind.NullKeyword) {
        return ['null'];
      }
      if (ts.isStringLiteral(literal)) {
        return [JSON.stringify(literal.text)];
      }
      return [`unknown:${node.getText()}`];
    }
    if (ts.isArrayTypeNode(node)) {
      return [`array<${text(this.shape(node.elementType))}>`];
    }
    if (ts.isTypeLiteralNode(node)) {
      return ['object'];
    }
    switch (node.kind) {
      case ts.SyntaxKind.StringKeyword:
        return ['string'];
      case ts.SyntaxKind.NumberKeyword:
        return ['number'];
      case ts.SyntaxKind.BooleanKeyword:
        return ['boolean'];
      default:
        break;
    }
    if (ts.isTypeReferenceNode(node)) {
      const name = node.typeName.getText();
      const args = node.typeArguments ?? [];
      if (name === 'Array' && args.length === 1) {
        return [`array<${text(this.shape(args[0]))}>`];
      }
      if (name === 'Record' && args.length === 2) {
        return [`map<${text(this.shape(args[1]))}>`];
      }
      if (INTERFACES[name] !== undefined) {
        return [`ref:${name}`];
      }
      if (ALIASES[name] !== undefined && OPAQUE.has(ALIASES[name])) {
        return [`ref:${ALIASES[name]}`];
      }
      const alias = this.aliases.get(name);
      if (alias) {
        return this.shape(alias.type);
      }
    }
    return [`unknown:${node.getText()}`];
  }
}

/**
 * The interface that mirrors each schema of INTERFACES.
 */
const MIRRORED = new Map(
  Object.entries(INTERFACES).flatMap(([name, schemas]) =>
    schemas.map(at => [at, name] as const)
  )
);

/**
 * What disagrees between interface `name` of `types` and the schema at `at` of `contract`,
 * one sentence each (none when they agree).
 */
function compareInterface(
  types: TypeModules,
  contract: Contract,
  name: string,
  at: string
): string[] {
  const problems: string[] = [];
  const schema = contract.find(at);
  if (!schema) {
    return [`${name}: its schema ${at} is not in openapi.yaml`];
  }
  const properties = types.properties(name, problems);
  const file = types.fileOf(name);
  const members = contract.members(schema);
  const expected = members.properties;
  const required = new Set(members.required);
  for (const key of Object.keys(expected)) {
    const property = properties.get(key);
    if (!property) {
      problems.push(
        `${name}.${key}: in ${at}${required.has(key) ? ' (required)' : ''}, missing from ${file}`
      );
      continue;
    }
    if (required.has(key) && property.optional) {
      problems.push(
        `${name}.${key}: required by ${at}, optional (?) in ${file}`
      );
    } else if (!required.has(key) && !property.optional) {
      problems.push(
        `${name}.${key}: not required by ${at}, so optional (?) in ${file}`
      );
    }
    const want = contract.shape(expected[key], `${at}.${key}`);
    const have = types.shape(property.type);
    if (have.includes('object')) {
      problems.push(
        `${name}.${key}: an inline object type: name it, and map it to its schema in this test`
      );
    } else if (text(want) !== text(have)) {
      problems.push(
        `${name}.${key}: ${text(have)} in ${file}, ${text(want)} in ${at}`
      );
    }
  }
  for (const key of properties.keys()) {
    if (!(key in expected)) {
      problems.push(`${name}.${key}: in ${file}, not in ${at}`);
    }
  }
  return problems;
}

/**
 * What disagrees between type alias `name` of `types` and the schema at `at`.
 */
function compareAlias(
  types: TypeModules,
  contract: Contract,
  name: string,
  at: string
): string[] {
  const schema = contract.find(at);
  if (!schema) {
    return [`${name}: its schema ${at} is not in openapi.yaml`];
  }
  const alias = types.aliases.get(name);
  if (!alias) {
    return [`${name}: no such type alias in the type modules`];
  }
  if (OPAQUE.has(at)) {
    return [];
  }
  const want = contract.shape(schema);
  const have = types.shape(alias.type);
  return text(want) === text(have)
    ? []
    : [
        `${name}: ${text(have)} in ${types.fileOf(name)}, ${text(want)} in ${at}`
      ];
}

const contract = new Contract(fs.readFileSync(OPENAPI, 'utf8'));
const types = new TypeModules(TYPE_MODULES);

describe('the type modules against openapi.yaml', () => {
  it('reads every type module, each declaration once', () => {
    expect(Object.keys(TYPE_MODULES)).toEqual(
      expect.arrayContaining([
        'gputypes.ts',
        'imagetypes.ts',
        'kerneltypes.ts',
        'sharingtypes.ts'
      ])
    );
    expect(types.duplicates).toEqual([]);
  });

  it('maps every interface and type alias of the type modules to a schema', () => {
    const unmapped = [
      ...[...types.interfaces.keys()].filter(name => !(name in INTERFACES)),
      ...[...types.aliases.keys()].filter(name => !(name in ALIASES))
    ];
    // A new declaration: add it to INTERFACES or ALIASES above.
    expect(unmapped).toEqual([]);
  });

  it.each(
    Object.entries(INTERFACES).flatMap(([name, schemas]) =>
      schemas.map(at => [name, at])
    )
  )('%s has the properties of %s', (name, at) => {
    expect(compareInterface(types, contract, name, at)).toEqual([]);
  });

  it.each(Object.entries(ALIASES))('%s mirrors %s', (name, at) => {
    expect(compareAlias(types, contract, name, at)).toEqual([]);
  });
});

describe('the comparison', () => {
  const doc = `
components:
  schemas:
    Thing:
      type: object
      required: [id, size, kind, tags, owner]
      properties:
        id: {type: string}
        size: {type: integer, nullable: true}
        kind: {type: string, enum: [a, b]}
        tags: {type: array, items: {type: string}}
        owner: {$ref: "#/components/schemas/Holder"}
        note: {type: string}
    Holder:
      type: object
      required: [mine]
      properties:
        mine: {type: boolean}
`;

  it('finds nothing when the interface agrees', () => {
    const agreeing = new TypeModules({
      'types.ts': `
      export interface IHolder { mine: boolean }
      export type Kind = 'b' | 'a';
      export interface IBase { id: string }
      export interface IThing extends IBase {
        size: number | null;
        kind: Kind;
        tags: Array<string>;
        owner: IHolder;
        note?: string;
      }
    `
    });
    expect(
      compareInterface(agreeing, new Contract(doc), 'IThing', 'Thing')
    ).toEqual([]);
  });

  it('names each property that disagrees, and how', () => {
    const wrong = new TypeModules({
      'types.ts': `
      export interface IHolder { mine: boolean }
      export interface IThing {
        id?: string;
        size: number;
        kind: 'a' | 'c';
        tags: string[];
        owner: IHolder;
        note: string;
        extra: boolean;
      }
    `
    });
    expect(
      compareInterface(wrong, new Contract(doc), 'IThing', 'Thing')
    ).toEqual([
      'IThing.id: required by Thing, optional (?) in types.ts',
      'IThing.size: number in types.ts, null | number in Thing',
      'IThing.kind: "a" | "c" in types.ts, "a" | "b" in Thing',
      'IThing.note: not required by Thing, so optional (?) in types.ts',
      'IThing.extra: in types.ts, not in Thing'
    ]);
  });

  it('follows paths into inline objects and array items, allOf and anyOf', () => {
    const nested = `
components:
  schemas:
    Holder:
      type: object
      required: [mine]
      properties:
        mine: {type: boolean}
    View:
      type: object
      required: [rows, extra]
      properties:
        rows:
          type: array
          items:
            allOf:
              - $ref: "#/components/schemas/Holder"
              - type: object
                required: [uid]
                properties:
                  uid: {type: integer}
        extra:
          anyOf:
            - {type: string}
            - {type: object, nullable: true, enum: [null]}
`;
    const contract = new Contract(nested);
    const saved = new Map(MIRRORED);
    MIRRORED.set('View.rows[]', 'IRow');
    try {
      const types = new TypeModules({
        'types.ts': `
        export interface IHolder { mine: boolean }
        export interface IRow extends IHolder { uid: number }
      `
      });
      expect(contract.find('View.rows[]')?.allOf).toHaveLength(2);
      expect(compareInterface(types, contract, 'IRow', 'View.rows[]')).toEqual(
        []
      );
      // anyOf's members, OpenAPI 3.0's null alone among them.
      expect(contract.shape(contract.find('View.extra')!)).toEqual([
        'null',
        'string'
      ]);
      const lacking = new TypeModules({
        'types.ts': `
        export interface IRow { mine: boolean }
      `
      });
      expect(
        compareInterface(lacking, contract, 'IRow', 'View.rows[]')
      ).toEqual(['IRow.uid: in View.rows[] (required), missing from types.ts']);
    } finally {
      MIRRORED.clear();
      saved.forEach((value, key) => MIRRORED.set(key, value));
    }
  });

  it('names a property that types.ts lacks, and a schema that is gone', () => {
    const lacking = new TypeModules({
      'types.ts': `
      export interface IThing { id: string }
    `
    });
    const problems = compareInterface(
      lacking,
      new Contract(doc),
      'IThing',
      'Thing'
    );
    expect(problems).toContain(
      'IThing.size: in Thing (required), missing from types.ts'
    );
    expect(problems).toContain('IThing.note: in Thing, missing from types.ts');
    expect(
      compareInterface(lacking, new Contract(doc), 'IThing', 'Gone')
    ).toEqual(['IThing: its schema Gone is not in openapi.yaml']);
  });
});
