/**
 * The effectful edge of the probe: the real {@link HostReader}, and the
 * walk that reads every file the report needs through any reader.
 */
import { constants } from 'node:fs';
import { access, readFile, readdir } from 'node:fs/promises';
import { KVM_MODULE_PARAMS, OTHER_MODULE_PARAMS } from './kvm.ts';
import type { ModuleParams } from './kvm.ts';
import { parseCpuDirName, parseCpuList, parseNodeDirName } from './parse.ts';
import { HOST_PATHS } from './report.ts';
import type { CpuTopologySource, HostSources } from './report.ts';
import type { AccessMode, HostReader } from './types.ts';

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Reads the real /proc, /sys and /dev of this machine. */
export const realHostReader: HostReader = {
  async readFile(path) {
    try {
      return await readFile(path, 'utf8');
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  },
  async readDir(path) {
    try {
      return await readdir(path);
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  },
  async access(path: string, mode: AccessMode) {
    try {
      await access(path, mode === 'rw' ? constants.R_OK | constants.W_OK : constants.F_OK);
      return true;
    } catch {
      return false;
    }
  },
};

function describe(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === undefined ? e.message : code;
  }
  return String(e);
}

/** Reads every file the report is built from. Never throws: a failed read becomes a `readErrors` line. */
export async function collectHostSources(reader: HostReader): Promise<HostSources> {
  const readErrors: string[] = [];
  const guard = async <T>(path: string, fn: () => Promise<T>, fallback: T): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      readErrors.push(`${path}: cannot read (${describe(e)})`);
      return fallback;
    }
  };
  const file = (path: string): Promise<string | undefined> => guard(path, () => reader.readFile(path), undefined);
  const dir = (path: string): Promise<string[] | undefined> => guard(path, () => reader.readDir(path), undefined);
  const can = (path: string, mode: AccessMode): Promise<boolean> => guard(path, () => reader.access(path, mode), false);

  const cpuOnline = await file(HOST_PATHS.cpuOnline);
  const [cpuinfo, meminfo, cpuTopology, nodes, hugepages, modules, devKvm, devSev] = await Promise.all([
    file(HOST_PATHS.cpuinfo),
    file(HOST_PATHS.meminfo),
    readCpuTopology(file, dir, cpuOnline),
    readNodes(file, dir),
    readHugepages(file, dir),
    readModules(file, dir, readErrors),
    readDevice(HOST_PATHS.devKvm, can),
    readDevice(HOST_PATHS.devSev, can),
  ]);
  return { cpuinfo, cpuOnline, cpuTopology, nodes, meminfo, hugepages, modules, devKvm, devSev, readErrors };
}

type ReadFile = (path: string) => Promise<string | undefined>;
type ReadDir = (path: string) => Promise<string[] | undefined>;

/** The topology files of the online CPUs (of every cpuN when the online list is unreadable). */
async function readCpuTopology(file: ReadFile, dir: ReadDir, online: string | undefined): Promise<CpuTopologySource[]> {
  const names = await dir(HOST_PATHS.cpuDir);
  const onlineSet = online === undefined ? undefined : parseCpuList(online);
  const cpus = (names ?? [])
    .map(parseCpuDirName)
    .filter((n): n is number => n !== undefined && (onlineSet === undefined || onlineSet.includes(n)))
    .sort((a, b) => a - b);
  return Promise.all(
    cpus.map(async (cpu) => {
      const base = `${HOST_PATHS.cpuDir}/cpu${cpu}/topology`;
      const [physicalPackageId, coreId, threadSiblingsList] = await Promise.all([
        file(`${base}/physical_package_id`),
        file(`${base}/core_id`),
        file(`${base}/thread_siblings_list`),
      ]);
      return { cpu, physicalPackageId, coreId, threadSiblingsList };
    }),
  );
}

async function readNodes(file: ReadFile, dir: ReadDir): Promise<HostSources['nodes']> {
  const names = await dir(HOST_PATHS.nodeDir);
  if (names === undefined) return undefined;
  const ids = names
    .map(parseNodeDirName)
    .filter((n): n is number => n !== undefined)
    .sort((a, b) => a - b);
  return Promise.all(
    ids.map(async (id) => {
      const base = `${HOST_PATHS.nodeDir}/node${id}`;
      const [cpulist, meminfo] = await Promise.all([file(`${base}/cpulist`), file(`${base}/meminfo`)]);
      return { id, cpulist, meminfo };
    }),
  );
}

async function readHugepages(file: ReadFile, dir: ReadDir): Promise<HostSources['hugepages']> {
  const names = await dir(HOST_PATHS.hugepagesDir);
  if (names === undefined) return undefined;
  return Promise.all(
    [...names].sort().map(async (d) => {
      const base = `${HOST_PATHS.hugepagesDir}/${d}`;
      const [nrHugepages, freeHugepages] = await Promise.all([file(`${base}/nr_hugepages`), file(`${base}/free_hugepages`)]);
      return { dir: d, nrHugepages, freeHugepages };
    }),
  );
}

async function readModules(file: ReadFile, dir: ReadDir, readErrors: string[]): Promise<Record<string, ModuleParams>> {
  const names = await dir(HOST_PATHS.moduleDir);
  if (names === undefined) {
    readErrors.push(`${HOST_PATHS.moduleDir}: missing, so no KVM module can be seen`);
    return {};
  }
  const kvm = names.filter((n) => n === 'kvm' || n.startsWith('kvm_')).sort();
  const entries = await Promise.all(
    kvm.map(async (name) => {
      const wanted = KVM_MODULE_PARAMS[name] ?? (name === 'kvm' ? [] : OTHER_MODULE_PARAMS);
      const values = await Promise.all(wanted.map((p) => file(`${HOST_PATHS.moduleDir}/${name}/parameters/${p}`)));
      const params: ModuleParams = {};
      wanted.forEach((p, i) => {
        params[p] = values[i];
      });
      return [name, params] as const;
    }),
  );
  return Object.fromEntries(entries);
}

async function readDevice(
  path: string,
  can: (path: string, mode: AccessMode) => Promise<boolean>,
): Promise<{ present: boolean; rw: boolean }> {
  const present = await can(path, 'exists');
  return { present, rw: present && (await can(path, 'rw')) };
}
