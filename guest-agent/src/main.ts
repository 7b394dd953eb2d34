// goship-agent entry point (placeholder until the agent lands).
process.stdout.write('goship-agent\n');
