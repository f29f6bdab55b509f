/**
 * Steps that come due before the next turn of the event loop run together in that turn, in the
 * order they came (the relay's `send` and `group_send`, docs/ARCHITECTURE.md "Coalesced writes").
 * A Durable Object's writes within one event are one commit, and under `wrangler dev` an event
 * that writes costs ~300 µs more than one that does not, whatever it writes
 * (docs/PERFORMANCE.md), so a burst of sends from many connections costs one commit.
 */
export class Coalescer {
  /** Steps waiting for the next run, in arrival order; null when no run is due. */
  #batch: Array<() => void> | null = null;
  /** `after` steps waiting for the next run, which runs them once the others have run. */
  #after: Array<() => void> = [];

  /** `later`: schedules one run (a zero-delay timer: its own event in a Durable Object). */
  constructor(
    private readonly later: (run: () => void) => void = (run) => {
      setTimeout(run, 0);
    },
  ) {}

  /**
   * Resolves once `step` has run, or rejects with what it threw; a step that throws stops no
   * other. A step queued by a running step goes to the next run. `after`: the step runs once
   * the run's other steps have, in arrival order among such steps — for work nobody waits on
   * (the relay's acks), so that it does not delay the deliveries that came with it. The caller
   * keeps each connection's frames in order (at most one step per connection is ever queued).
   */
  run(step: () => void, after = false): Promise<void> {
    return new Promise((resolve, reject) => {
      const run = () => {
        try {
          step();
          resolve();
        } catch (e) {
          reject(e);
        }
      };
      if (after) this.#after.push(run);
      if (this.#batch !== null) {
        if (!after) this.#batch.push(run);
        return;
      }
      this.#batch = after ? [] : [run];
      this.later(() => {
        const batch = this.#batch ?? [];
        const rest = this.#after;
        this.#batch = null;
        this.#after = [];
        for (const r of batch) r();
        for (const r of rest) r();
      });
    });
  }
}
