/**
 * Steps that come due before the next turn of the event loop run together in that turn, in the
 * order they came (the relay's `send` and `group_send`, docs/ARCHITECTURE.md "Coalesced writes").
 * A Durable Object's writes within one event are one commit, and under `wrangler dev` an event
 * that writes costs ~300 µs more than one that does not, whatever it writes
 * (docs/PERFORMANCE.md), so a burst of sends from many connections costs one commit.
 */
export class Coalescer {
  /** Steps waiting for the next run, in arrival order. */
  #first: Array<() => void> = [];
  /** `after` steps waiting for the next run, which runs them once the others have run. */
  #after: Array<() => void> = [];
  /** Whether a run is scheduled. */
  #due = false;

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
      (after ? this.#after : this.#first).push(run);
      if (this.#due) return;
      this.#due = true;
      this.later(() => {
        const first = this.#first;
        const after = this.#after;
        this.#first = [];
        this.#after = [];
        this.#due = false;
        for (const r of first) r();
        for (const r of after) r();
      });
    });
  }
}
