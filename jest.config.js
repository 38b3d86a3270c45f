/**
 * Jest configuration for the JupyterLab extension's unit tests.
 *
 * The @jupyterlab packages (and a few of their dependencies) ship ES modules,
 * which jest's CommonJS runtime cannot load as they are: they are transpiled by
 * ts-jest like our own sources, everything else in node_modules is left alone.
 */
const esModules = [
  '@codemirror',
  '@jupyter/ydoc',
  '@jupyterlab/',
  'lib0',
  'nanoid',
  'vscode-ws-jsonrpc',
  'y-protocols',
  'y-websocket',
  'yjs'
].join('|');

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/labextension/src'],
  testRegex: 'labextension/src/__tests__/.*\\.spec\\.tsx?$',
  moduleFileExtensions: ['ts', 'tsx', 'js', 'jsx', 'json', 'node'],
  transform: {
    '^.+\\.[tj]sx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  transformIgnorePatterns: [`/node_modules/(?!${esModules}).+`],
  modulePathIgnorePatterns: [
    '<rootDir>/.venv',
    '<rootDir>/jupyter_gpu_containers/labextension',
    '<rootDir>/lib'
  ],
  collectCoverageFrom: [
    'labextension/src/**/*.{ts,tsx}',
    '!labextension/src/**/*.d.ts',
    '!labextension/src/__tests__/**'
  ],
  coverageDirectory: 'coverage',
  coverageReporters: ['lcov', 'text']
};
