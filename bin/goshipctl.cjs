#!/usr/bin/env node
// CommonJS on purpose: an ES module entry makes Node start its ESM loader first (~10 ms of every command).
require('../dist/goshipctl.cjs');
