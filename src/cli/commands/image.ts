/** goshipctl image …: base images (built from Debian packages, or imported). */
import type { CAC } from 'cac';
import { NotSupportedError } from '../../errors.ts';
import type { CommandContext } from '../context.ts';

export function registerImage(cli: CAC, _ctx: CommandContext): void {
  cli.command('list', 'list base images').action(async () => {
    throw new NotSupportedError('image commands are not available yet');
  });
}
