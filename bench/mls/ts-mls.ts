/**
 * ts-mls (RFC 9420 MLS in TypeScript) as a baseline for Parley's group commits: commit create and
 * process at the roster sizes given on the command line, measured with the same `measure` as the
 * Parley rows. Run as its own process (bench/build.mjs bundles it with this folder's packages:
 * ts-mls pins other @noble/* versions than Parley's). Prints one JSON line on stdout.
 *
 * Setup per size: the creator makes the group and adds every other member in one commit; one
 * member joins from the Welcome. Measured: the creator's empty commit (a full update path) and the
 * member processing it. After one add-everyone commit the tree is mostly blank, so the update path
 * is encrypted to every leaf (RFC 9420 §7.9, resolution of blank nodes): the O(n) case, the one a
 * group that has not yet re-keyed its subtrees sees, comparable with Parley's wrap per member.
 * Suite MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (RFC 9420 §17.1, 0x0001).
 */
import {
  acceptAll,
  type ClientState,
  createCommit,
  createGroup,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  generateKeyPackage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  type MlsPrivateMessage,
  processMessage,
} from "ts-mls";
import { measure } from "../lib";

const te = new TextEncoder();

async function run(size: number) {
  const impl = await getCiphersuiteImpl(
    getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"),
  );
  const kp = (name: string) =>
    generateKeyPackage(
      { credentialType: "basic", identity: te.encode(name) },
      defaultCapabilities(),
      defaultLifetime,
      [],
      impl,
    );
  const creator = await kp("m0");
  let a: ClientState = await createGroup(
    te.encode("g"),
    creator.publicPackage,
    creator.privatePackage,
    [],
    impl,
  );
  const others = [];
  for (let i = 1; i < size; i++) others.push(await kp(`m${i}`));
  const added = await createCommit(
    { state: a, cipherSuite: impl },
    {
      extraProposals: others.map((o) => ({
        proposalType: "add" as const,
        add: { keyPackage: o.publicPackage },
      })),
    },
  );
  a = added.newState;
  const first = others[0];
  if (first === undefined || added.welcome === undefined) throw new Error("ts-mls: no welcome");
  const b = await joinGroup(
    added.welcome,
    first.publicPackage,
    first.privatePackage,
    emptyPskIndex,
    impl,
    a.ratchetTree,
  );
  const slow = size >= 100;
  const opts = { minMs: slow ? 1500 : 800, minIterations: 3, warmup: 1 };
  const create = await measure(
    `ts-mls commit create ${size}`,
    () => createCommit({ state: a, cipherSuite: impl }),
    opts,
  );
  const commit = (await createCommit({ state: a, cipherSuite: impl })).commit;
  const process_ = await measure(
    `ts-mls commit process ${size}`,
    async () => {
      const r = await processMessage(
        commit as MlsPrivateMessage,
        b,
        emptyPskIndex,
        acceptAll,
        impl,
      );
      if (r.kind !== "newState") throw new Error("ts-mls: commit not applied");
    },
    opts,
  );
  return { size, createMs: create.meanUs / 1000, processMs: process_.meanUs / 1000 };
}

const sizes = (process.argv[2] ?? "10,100,1000").split(",").map(Number);
const out = [];
for (const size of sizes) {
  const r = await run(size);
  process.stderr.write(
    `  ts-mls ${size}: commit create ${r.createMs.toFixed(1)} ms, process ${r.processMs.toFixed(1)} ms\n`,
  );
  out.push(r);
}
process.stdout.write(`${JSON.stringify(out)}\n`);
