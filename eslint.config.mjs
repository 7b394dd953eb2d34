// ESLint (flat config): typescript-eslint's `recommended` (syntax only, no
// type information: tsc --noEmit already type-checks, and lint stays fast),
// the rules the code already follows, and off or tuned where the code breaks
// a rule on purpose. No formatting rules: nothing here rewrites files.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // Generated or installed: the bundles, packages, coverage reports, caches.
  { ignores: ['**/dist/', '**/node_modules/', '**/coverage/', '.cache/', '.scratch/', '**/*.d.ts'] },
  {
    // Without this ESLint would lint only *.js, *.mjs and *.cjs.
    files: ['**/*.ts', '**/*.mjs', '**/*.cjs'],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      // ES modules: Node's globals without CommonJS's (require, __dirname).
      globals: globals.nodeBuiltin,
    },
    rules: {
      // Tuned: a parameter a signature requires but the body doesn't use is
      // named `_x` (the QEMU device builders share one (part, ctx) signature).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      // Off: the code matches control characters on purpose (terminal escapes
      // stripped from output, control bytes refused in guest-supplied names
      // and cloud-init values).
      'no-control-regex': 'off',

      // Rules the code already follows, kept that way.
      eqeqeq: 'error', // === everywhere, null included
      'no-var': 'error',
      'prefer-const': 'error',
      'no-throw-literal': 'error', // only Error objects are thrown (callers read .code and .message)
      'no-eval': 'error', // nothing is evaluated from strings: the guest sends untrusted data
      'no-implied-eval': 'error',
      'no-new-func': 'error',
      'no-self-compare': 'error',
      'no-unreachable-loop': 'error',
      radix: 'error', // parseInt always names its base (8 for modes and octal escapes, 10 for command output)
      'object-shorthand': 'error',
      'prefer-arrow-callback': 'error',
      'prefer-exponentiation-operator': 'error',
      'logical-assignment-operators': 'error', // ??= and ||=
      // With verbatimModuleSyntax, `import { type A } from 'm'` still loads 'm'; `import type` does not.
      '@typescript-eslint/no-import-type-side-effects': 'error',
      '@typescript-eslint/consistent-type-assertions': 'error', // `x as T`, never `<T>x`
    },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
    rules: {
      // CommonJS on purpose (bin/goshipctl.cjs: an ES module entry makes Node
      // start its ESM loader first; .dependency-cruiser.cjs): require is how it imports.
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
);
