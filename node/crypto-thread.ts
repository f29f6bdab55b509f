/**
 * One worker thread for the Node backend's batches (crypto-thread.cjs runs them): a group commit
 * (PROTOCOL §9.2.3) seals one wrap per member and checks one signature per member, and on the main
 * thread alone a 1000-member commit spent ~64 µs per member in ML-KEM encapsulation and ~75 µs per
 * member (cold) in Ed25519 checks. Handed over in batches, both run on a second core while the main
 * thread seals — X25519, HPKE and AES-GCM stay on the main thread.
 *
 * Why not libuv's pool (`crypto.verify` with a callback): each pooled call costs the main thread a
 * job of its own (~20 µs to dispatch and resolve) and runs OpenSSL's verify, half as fast as
 * libsodium's; a batch here costs the main thread one copy. The thread starts on first use and
 * does not keep the process alive while idle. A thread that fails answers nothing more: its
 * batches are redone on the main thread (`fallback`), and the next batch starts a new thread.
 */
import { Worker } from "node:worker_threads";

interface Job {
  fallback(): Uint8Array;
  resolve(out: Uint8Array): void;
  reject(e: unknown): void;
}

export class CryptoThread {
  #worker: Worker | null = null;
  /** `script`: the thread's code (tests give a failing one to check the fallback). */
  constructor(private readonly script = new URL("./crypto-thread.cjs", import.meta.url)) {}
  #next = 0;
  readonly #jobs = new Map<number, Job>();

  /**
   * Run `kind` over the packed records in `input` (transferred: the caller must not use it
   * again); `fallback` computes the same answer on this thread if the worker cannot.
   */
  run(kind: "kem" | "verify", n: number, input: Uint8Array, fallback: () => Uint8Array) {
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.#next++;
      this.#jobs.set(id, { fallback, resolve, reject });
      const w = this.#thread();
      w.ref();
      const buf = input.buffer as ArrayBuffer;
      w.postMessage({ id, kind, n, buf }, [buf]);
    });
  }

  #thread(): Worker {
    if (this.#worker !== null) return this.#worker;
    const w = new Worker(this.script);
    w.on("message", ({ id, out }: { id: number; out: Uint8Array | null }) => {
      const job = this.#jobs.get(id);
      if (job === undefined) return;
      this.#jobs.delete(id);
      if (this.#jobs.size === 0) w.unref();
      settle(job, out);
    });
    const fail = () => {
      if (this.#worker !== w) return;
      this.#worker = null;
      const jobs = [...this.#jobs.values()];
      this.#jobs.clear();
      for (const job of jobs) settle(job, null);
    };
    w.on("error", fail);
    w.on("exit", fail);
    this.#worker = w;
    return w;
  }
}

function settle(job: Job, out: Uint8Array | null): void {
  if (out !== null) {
    job.resolve(out);
    return;
  }
  try {
    job.resolve(job.fallback());
  } catch (e) {
    job.reject(e);
  }
}

export const cryptoThread = new CryptoThread();
