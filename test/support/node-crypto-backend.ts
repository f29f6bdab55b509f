/** Vitest `node` project setup: shared/crypto runs on node:crypto, as in every Node entry point. */
import { installNodeCryptoBackend } from "../../node/crypto-backend";

installNodeCryptoBackend();
