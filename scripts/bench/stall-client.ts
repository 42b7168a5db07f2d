/**
 * The benchmark's handle on an independent writer (scripts/bench/stall-writer), a child
 * process writing to one filesystem: asks it for the longest stall around a time window.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/** The independent writer on one filesystem (scripts/bench/stall-writer). */
export class StallWriter {
  private next = 0;
  private readonly waiting = new Map<number, (stall: number) => void>();
  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { id?: number; stallMs?: number }) => {
      if (m.id !== undefined) this.waiting.get(m.id)?.(m.stallMs!);
    });
  }

  static async start(file: string): Promise<StallWriter> {
    const child = fork(join(__dirname, 'stall-writer.js'), [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve) => child.once('message', () => resolve()));
    // Let it reach its steady pace before anything is measured.
    await new Promise((r) => setTimeout(r, 1500));
    return new StallWriter(child);
  }

  stall(from: number, to: number): Promise<number> {
    const id = this.next++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.send({ id, from, to });
    });
  }

  /** Stops its writes for a while (SIGSTOP), so that a measurement runs without them; resume() goes on. */
  pause(): void {
    this.child.kill('SIGSTOP');
  }

  resume(): void {
    this.child.kill('SIGCONT');
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

