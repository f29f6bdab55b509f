/**
 * Baseline: Signal's own library (`@signalapp/libsignal-client`, Rust via N-API) driven through
 * in-memory stores, so Parley's 1:1 figures can be stated as ratios against it.
 */
import * as S from "@signalapp/libsignal-client";

class Stores {
  readonly sessions = new Map<string, S.SessionRecord>();
  readonly identities = new Map<string, S.PublicKey>();
  readonly prekeys = new Map<number, S.PreKeyRecord>();
  readonly signed = new Map<number, S.SignedPreKeyRecord>();
  readonly kyber = new Map<number, S.KyberPreKeyRecord>();
  constructor(
    readonly identity: S.IdentityKeyPair,
    readonly registrationId: number,
  ) {}

  sessionStore(): S.SessionStore {
    const self = this;
    return new (class extends S.SessionStore {
      async saveSession(a: S.ProtocolAddress, r: S.SessionRecord) {
        self.sessions.set(a.toString(), r);
      }
      async getSession(a: S.ProtocolAddress) {
        return self.sessions.get(a.toString()) ?? null;
      }
      async getExistingSessions(as: S.ProtocolAddress[]) {
        return as.map((a) => {
          const r = self.sessions.get(a.toString());
          if (!r) throw new Error("no session");
          return r;
        });
      }
    })();
  }

  identityStore(): S.IdentityKeyStore {
    const self = this;
    return new (class extends S.IdentityKeyStore {
      async getIdentityKey() {
        return self.identity.privateKey;
      }
      async getLocalRegistrationId() {
        return self.registrationId;
      }
      async saveIdentity(a: S.ProtocolAddress, k: S.PublicKey) {
        const prev = self.identities.get(a.toString());
        self.identities.set(a.toString(), k);
        return prev && !prev.equals(k)
          ? S.IdentityChange.ReplacedExisting
          : S.IdentityChange.NewOrUnchanged;
      }
      async isTrustedIdentity() {
        return true;
      }
      async getIdentity(a: S.ProtocolAddress) {
        return self.identities.get(a.toString()) ?? null;
      }
    })();
  }

  preKeyStore(): S.PreKeyStore {
    const self = this;
    return new (class extends S.PreKeyStore {
      async savePreKey(id: number, r: S.PreKeyRecord) {
        self.prekeys.set(id, r);
      }
      async getPreKey(id: number) {
        const r = self.prekeys.get(id);
        if (!r) throw new Error("no prekey");
        return r;
      }
      async removePreKey(id: number) {
        self.prekeys.delete(id);
      }
    })();
  }

  signedPreKeyStore(): S.SignedPreKeyStore {
    const self = this;
    return new (class extends S.SignedPreKeyStore {
      async saveSignedPreKey(id: number, r: S.SignedPreKeyRecord) {
        self.signed.set(id, r);
      }
      async getSignedPreKey(id: number) {
        const r = self.signed.get(id);
        if (!r) throw new Error("no signed prekey");
        return r;
      }
    })();
  }

  kyberStore(): S.KyberPreKeyStore {
    const self = this;
    return new (class extends S.KyberPreKeyStore {
      async saveKyberPreKey(id: number, r: S.KyberPreKeyRecord) {
        self.kyber.set(id, r);
      }
      async getKyberPreKey(id: number) {
        const r = self.kyber.get(id);
        if (!r) throw new Error("no kyber prekey");
        return r;
      }
      async markKyberPreKeyUsed() {}
    })();
  }
}

export interface SignalParty {
  name: string;
  address: S.ProtocolAddress;
  stores: Stores;
  bundle(): S.PreKeyBundle;
}

let nextPrekeyId = 1;

/** A party with a signed prekey, a last-resort Kyber prekey and a fresh one-time prekey per bundle. */
export function makeSignalParty(name: string): SignalParty {
  const identity = S.IdentityKeyPair.generate();
  const stores = new Stores(identity, 1 + Math.floor(Math.random() * 16000));
  const spk = S.PrivateKey.generate();
  const spkSig = identity.privateKey.sign(spk.getPublicKey().serialize());
  stores.signed.set(1, S.SignedPreKeyRecord.new(1, Date.now(), spk.getPublicKey(), spk, spkSig));
  const kem = S.KEMKeyPair.generate();
  const kemSig = identity.privateKey.sign(kem.getPublicKey().serialize());
  stores.kyber.set(1, S.KyberPreKeyRecord.new(1, Date.now(), kem, kemSig));
  return {
    name,
    address: S.ProtocolAddress.new(name, 1),
    stores,
    bundle() {
      const id = nextPrekeyId++;
      const opk = S.PrivateKey.generate();
      stores.prekeys.set(id, S.PreKeyRecord.new(id, opk.getPublicKey(), opk));
      return S.PreKeyBundle.new(
        stores.registrationId,
        1,
        id,
        opk.getPublicKey(),
        1,
        spk.getPublicKey(),
        spkSig,
        identity.publicKey,
        1,
        kem.getPublicKey(),
        kemSig,
      );
    },
  };
}

export async function signalEncrypt(
  from: SignalParty,
  to: SignalParty,
  plaintext: Uint8Array,
): Promise<S.CiphertextMessage> {
  return S.signalEncrypt(
    plaintext as Uint8Array<ArrayBuffer>,
    to.address,
    from.address,
    from.stores.sessionStore(),
    from.stores.identityStore(),
  );
}

export async function signalDecrypt(
  at: SignalParty,
  from: SignalParty,
  msg: S.CiphertextMessage,
): Promise<Uint8Array> {
  if (msg.type() === S.CiphertextMessageType.PreKey) {
    return S.signalDecryptPreKey(
      S.PreKeySignalMessage.deserialize(msg.serialize()),
      from.address,
      at.address,
      at.stores.sessionStore(),
      at.stores.identityStore(),
      at.stores.preKeyStore(),
      at.stores.signedPreKeyStore(),
      at.stores.kyberStore(),
    );
  }
  return S.signalDecrypt(
    S.SignalMessage.deserialize(msg.serialize()),
    from.address,
    at.address,
    at.stores.sessionStore(),
    at.stores.identityStore(),
  );
}

/** PQXDH setup as a client does it: process the peer's bundle, first encrypt, peer decrypts. */
export async function signalSetup(alice: SignalParty, bob: SignalParty, first: Uint8Array) {
  alice.stores.sessions.delete(bob.address.toString());
  bob.stores.sessions.delete(alice.address.toString());
  await S.processPreKeyBundle(
    bob.bundle(),
    bob.address,
    alice.address,
    alice.stores.sessionStore(),
    alice.stores.identityStore(),
  );
  const ct = await signalEncrypt(alice, bob, first);
  return signalDecrypt(bob, alice, ct);
}
