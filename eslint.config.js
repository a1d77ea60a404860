'use strict';
// ESLint (flat config): typescript-eslint's recommended rules for the
// TypeScript sources, ESLint's for the CommonJS scripts. `npm run lint` runs
// it with Prettier and clang-format (scripts/lint.js).
const js = require('@eslint/js');
const { defineConfig } = require('eslint/config');
const tseslint = require('typescript-eslint');

// The globals of the Node.js that runs ESLint, and CommonJS's module scope:
// what the scripts may use without a `globals` package to keep in step.
const nodeGlobals = Object.fromEntries([...Object.getOwnPropertyNames(globalThis), 'require', 'module', 'exports', '__dirname', '__filename'].map((name) => [name, 'readonly']));

module.exports = defineConfig(
  { ignores: ['dist/', 'node_modules/', 'firmware/', '.node-red-demo/'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    rules: {
      // tsc (noUnusedLocals, noUnusedParameters) reports these already.
      '@typescript-eslint/no-unused-vars': 'off',
      // Node-RED's idiom: a node's constructor keeps `this` as `node` for its handlers.
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['node'] }],
    },
  },
  {
    files: ['**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'commonjs', globals: nodeGlobals },
  },
);
