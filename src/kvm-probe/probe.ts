/** The probe's story: read the host through a reader, build the report. */
import { collectHostSources, realHostReader } from './probe-io.ts';
import { buildHostReport } from './report.ts';
import type { HostReader, HostReport } from './types.ts';

/**
 * What this host (or the host behind `reader`) can do. Never rejects for
 * what it finds: unreadable or unparsable values are `null` in the report
 * and named in `warnings`.
 */
export async function probeHost(reader: HostReader = realHostReader): Promise<HostReport> {
  return buildHostReport(await collectHostSources(reader));
}
