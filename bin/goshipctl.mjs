#!/usr/bin/env node
import '../dist/goshipctl.mjs';
