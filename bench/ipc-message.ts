// CPU per engine-process step message (the 'out' message an engine process sends once per event-loop
// turn: one text-delta part at 1 stream) over Node's IPC channel, on both sides, with nothing else
// running in either process: the floor of what the process boundary adds per generated token. The
// shape follows src/engines/runner/child.ts (post/flush). Not a test: prints figures.
//
// Usage: node --import tsx bench/ipc-message.ts [--messages 20000] [--rounds 5]
import { fork } from 'node:child_process';
import { parseArgs } from 'node:util';

if (process.argv[2] === 'child') {
  process.on('message', (command: { count: number }) => {
    const cpu = process.cpuUsage();
    let sent = 0;
    // One message per event-loop turn, as the engine process's flush does.
    const next = () => {
      if (sent === command.count) {
        const used = process.cpuUsage(cpu);
        process.send!({ t: 'done', cpuUs: used.user + used.system });
        return;
      }
      sent++;
      process.send!({ t: 'out', items: [{ t: 'part', id: 7, part: { type: 'text-delta', id: 'text', delta: ' lighthouse' } }] });
      setImmediate(next);
    };
    next();
  });
} else {
  const { values } = parseArgs({ options: { messages: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '5' } } });
  const count = Number(values.messages);
  const child = fork(new URL(import.meta.url).pathname, ['child'], { execArgv: ['--import', 'tsx'] });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const sender: number[] = [];
  const receiver: number[] = [];
  for (let round = 0; round <= Number(values.rounds); round++) {
    const cpu = process.cpuUsage();
    let received = 0;
    const childCpu = await new Promise<number>((resolve) => {
      const onMessage = (message: { t: string; cpuUs?: number; items?: { part: { delta: string } }[] }) => {
        if (message.t === 'done') {
          child.off('message', onMessage);
          resolve(message.cpuUs!);
        } else received += message.items!.length;
      };
      child.on('message', onMessage);
      child.send({ count });
    });
    const used = process.cpuUsage(cpu);
    if (received !== count) throw new Error(`received ${received} of ${count}`);
    if (round === 0) continue; // warm-up
    sender.push(childCpu / count);
    receiver.push((used.user + used.system) / count);
  }
  console.log(`IPC step message, CPU µs per message (medians of ${values.rounds} rounds of ${count}): engine side (send) ${median(sender).toFixed(1)}, server side (receive, parse) ${median(receiver).toFixed(1)}`);
  console.log(`rounds: send ${sender.map((x) => x.toFixed(1)).join(' ')}; receive ${receiver.map((x) => x.toFixed(1)).join(' ')}`);
  child.kill();
}
