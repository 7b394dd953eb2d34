// goshipctl entry point (placeholder until the CLI lands).
process.stdout.write('goshipctl 0.1.0\n');
