// CPU time read from /proc, for benches on a shared box (CPU time moves less with other tenants than
// wall time does).
import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU jiffies of a process and all its descendants, reaped children included (utime + stime + cutime +
 * cstime): Infera may run a model in an engine process, and a child that already exited still counts.
 */
export function treeCpuJiffies(rootPid: number): number {
  const { tree, times } = processTree(rootPid, true);
  let total = 0;
  for (const pid of tree) total += times.get(pid) ?? 0;
  return total;
}

/**
 * CPU nanoseconds of a process tree's live threads (the first field of /proc/<pid>/task/<tid>/schedstat):
 * jiffies (10 ms) are too coarse for one short decode run. Threads that exited during the window are
 * not counted, so use it across windows in which the servers' threads persist (thread pools, the
 * event loop), as in a decode run.
 */
export function treeCpuNs(rootPid: number): number {
  let total = 0;
  for (const task of treeTasks(rootPid)) {
    try {
      total += Number(readFileSync(`${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** One live thread of a process tree: its process, its name (the main thread's marked `(main)`), CPU ns and voluntary switches so far. */
export interface TreeThread {
  pid: number;
  name: string;
  ns: number;
  /** Voluntary context switches: the thread blocked and had to be woken again (a hand-off on a request's path). */
  switches: number;
}

/** Every live thread of a process tree, keyed `pid/tid`. */
export function treeThreads(rootPid: number): Map<string, TreeThread> {
  const out = new Map<string, TreeThread>();
  for (const task of treeTasks(rootPid)) {
    const [, , pidText, , tid] = task.split('/') as [string, string, string, string, string];
    const pid = Number(pidText);
    try {
      const name = readFileSync(`${task}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`${task}/schedstat`, 'utf8').split(' ')[0]);
      const status = readFileSync(`${task}/status`, 'utf8');
      const switches = Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
      out.set(`${pid}/${tid}`, { pid, name: Number(tid) === pid ? `${name}(main)` : name, ns, switches });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** The /proc/<pid>/task/<tid> directory of every live thread of a process tree. */
function treeTasks(rootPid: number): string[] {
  const tasks: string[] = [];
  for (const pid of processTree(rootPid, false).tree) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) tasks.push(`/proc/${pid}/task/${tid}`);
    } catch {
      // gone meanwhile
    }
  }
  return tasks;
}

function processTree(rootPid: number, withTimes: boolean): { tree: Set<number>; times: Map<number, number> } {
  const parents = new Map<number, number>();
  const times = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(entry), Number(fields[1]));
      if (!withTimes) continue;
      // utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name.
      times.set(Number(entry), Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = new Set([rootPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, parent] of parents)
      if (!tree.has(pid) && tree.has(parent)) {
        tree.add(pid);
        grew = true;
      }
  }
  return { tree, times };
}
