/**
 * Shown when the relay refused this browser because the identity was restored on another device
 * (PROTOCOL.md §4.3). Nothing reaches this browser any more; the user may take the identity back
 * here, which makes the other device the replaced one. Also shown: this device was removed from
 * the account's device list by another device of ours (§4.7), for good.
 */
import { Show } from "solid-js";
import { useParley } from "../app/context";
import { LINK_WORDS } from "./wording";

export function RetiredBanner() {
  const { state, actions } = useParley();
  return (
    <>
      <Show when={state.conn.kind === "removed"}>
        <div class="banner danger" role="alert" data-testid="removed-banner">
          <span>{LINK_WORDS.removedBanner}</span>
        </div>
      </Show>
      <Show when={state.conn.kind === "retired"}>
        <div class="banner danger" role="alert" data-testid="retired-banner">
          <span>
            Your identity was restored on another device, which now receives your messages. This
            browser no longer sends or receives anything.
          </span>
          <div class="banner-actions">
            <button
              type="button"
              class="primary"
              data-testid="reclaim-device"
              onClick={() => void actions.reclaimDevice()}
            >
              Use Parley here instead
            </button>
          </div>
        </div>
      </Show>
    </>
  );
}
