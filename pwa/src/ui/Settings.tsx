/**
 * Settings: this device's identity (name, fingerprint, full public key), its linked devices
 * (Devices.tsx), identity export as a
 * passphrase-encrypted file (storage/backup.ts), the passphrase lock, the colour theme and
 * notifications.
 */
import { createSignal, For, Show } from "solid-js";
import type { PresenceScope } from "../../../shared/protocol";
import { useParley } from "../app/context";
import { NOTIFY_CONTENTS, type NotifyContent } from "../platform/push";
import { applyTheme, readTheme, THEME_CHOICES, type ThemeChoice } from "../platform/theme";
import { MIN_PASSPHRASE_LENGTH } from "../storage/backup";
import { MIN_LOCK_PASSPHRASE } from "../storage/lock";
import { Modal } from "./Dialogs";
import { LazyDevicesSection } from "./lazy";

/** Offer text as a file download (an object URL on a temporary link; no inline script). */
export function download(filename: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Why a new passphrase (typed twice) is refused, or null: one rule for the lock and backups. */
function newPassphraseProblem(pass: string, again: string, min: number): string | null {
  if (pass.length < min) return `Use at least ${min} characters.`;
  if (pass !== again) return "The two passphrases differ.";
  return null;
}

function LockSection() {
  const { actions, lockOn } = useParley();
  const [pass, setPass] = createSignal("");
  const [pass2, setPass2] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  const [msg, setMsg] = createSignal<{ ok: boolean; text: string } | null>(null);
  const turnOn = async () => {
    setMsg(null);
    const problem = newPassphraseProblem(pass(), pass2(), MIN_LOCK_PASSPHRASE);
    if (problem !== null) {
      setMsg({ ok: false, text: problem });
      return;
    }
    setBusy(true);
    const err = await actions.enableLock(pass());
    setBusy(false);
    setPass("");
    setPass2("");
    setMsg(err ? { ok: false, text: err } : { ok: true, text: "Lock is on." });
  };
  return (
    <section class="settings-section" aria-labelledby="settings-lock">
      <h3 id="settings-lock">Passphrase lock</h3>
      <Show
        when={lockOn()}
        fallback={
          <form
            class="stack"
            onSubmit={(e) => {
              e.preventDefault();
              void turnOn();
            }}
          >
            <p class="help">
              Seal this device’s keys and history with a passphrase, asked every time Parley opens.
              There is no recovery: forget it and only an exported identity file helps.
            </p>
            <label for="lock-pass">New passphrase</label>
            <input
              id="lock-pass"
              type="password"
              autocomplete="new-password"
              value={pass()}
              onInput={(e) => setPass(e.currentTarget.value)}
            />
            <label for="lock-pass2">Repeat passphrase</label>
            <input
              id="lock-pass2"
              type="password"
              autocomplete="new-password"
              value={pass2()}
              onInput={(e) => setPass2(e.currentTarget.value)}
            />
            <button type="submit" class="secondary" disabled={busy()} data-testid="lock-on">
              {busy() ? "Sealing…" : "Turn on lock"}
            </button>
          </form>
        }
      >
        <p class="help">On: Parley asks for your passphrase every time it opens.</p>
        <div class="modal-actions">
          <button
            type="button"
            class="secondary"
            disabled={busy()}
            data-testid="lock-off"
            onClick={async () => {
              setBusy(true);
              const err = await actions.disableLock();
              setBusy(false);
              setMsg(err ? { ok: false, text: err } : { ok: true, text: "Lock is off." });
            }}
          >
            Turn off lock
          </button>
          <button
            type="button"
            class="primary"
            data-testid="lock-now"
            onClick={() => actions.lockNow()}
          >
            Lock now
          </button>
        </div>
      </Show>
      <Show when={msg()}>
        {(m) => (
          <p class={m().ok ? "ok-note" : "error"} role={m().ok ? "status" : "alert"}>
            {m().text}
          </p>
        )}
      </Show>
    </section>
  );
}

const THEME_LABEL: Record<ThemeChoice, string> = {
  system: "System",
  light: "Light",
  dark: "Dark",
};

const PRESENCE_LABEL: Record<PresenceScope, string> = {
  contacts: "People I talk to",
  everyone: "Everyone on this hub",
};

const NOTIFY_LABEL: Record<NotifyContent, string> = {
  full: "Name and text",
  name: "Name only",
  none: "Nothing",
};

function ThemeSection() {
  const [theme, setTheme] = createSignal(readTheme());
  return (
    <section class="settings-section" aria-labelledby="settings-theme">
      <h3 id="settings-theme">Appearance</h3>
      <div class="segmented" role="radiogroup" aria-labelledby="settings-theme">
        <For each={THEME_CHOICES}>
          {(choice) => (
            <label class="segment">
              <input
                type="radio"
                name="theme"
                value={choice}
                data-testid={`theme-${choice}`}
                checked={theme() === choice}
                onChange={() => {
                  setTheme(choice);
                  applyTheme(choice);
                }}
              />
              <span>{THEME_LABEL[choice]}</span>
            </label>
          )}
        </For>
      </div>
      <p class="help">“System” follows your device’s light or dark setting.</p>
    </section>
  );
}

export function SettingsDialog(props: { onClose: () => void }) {
  const { state, actions, notifyPerm, notifyContent, messaging } = useParley();
  const [pass, setPass] = createSignal("");
  const [pass2, setPass2] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  const [msg, setMsg] = createSignal<{ ok: boolean; text: string } | null>(null);

  const exportNow = async () => {
    setMsg(null);
    const problem = newPassphraseProblem(pass(), pass2(), MIN_PASSPHRASE_LENGTH);
    if (problem !== null) {
      setMsg({ ok: false, text: problem });
      return;
    }
    setBusy(true);
    try {
      const f = await actions.exportIdentity(pass());
      download(f.filename, f.text);
      setPass("");
      setPass2("");
      setMsg({ ok: true, text: `Saved ${f.filename}. Keep it and the passphrase safe.` });
    } catch (e) {
      setMsg({ ok: false, text: e instanceof Error ? e.message : String(e) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal title="Settings" onClose={props.onClose} testid="settings-dialog">
      <section class="settings-section" aria-labelledby="settings-identity">
        <h3 id="settings-identity">Your identity</h3>
        <dl class="keys">
          <dt>Username</dt>
          <dd class="ellipsis" title={state.me?.username}>
            {state.me?.username}
          </dd>
          <dt>Fingerprint</dt>
          <dd class="fingerprint">{state.me?.fingerprint}</dd>
          <dt>Public key</dt>
          <dd class="fingerprint break">{state.me?.identityKey}</dd>
        </dl>
        <p class="help">
          Your private key never leaves this browser unencrypted: it is stored as a key the page
          itself cannot read out.
        </p>
      </section>
      <LazyDevicesSection />
      <section class="settings-section" aria-labelledby="settings-export">
        <h3 id="settings-export">Move to another device</h3>
        <p class="help">
          Export your identity as a file locked with a passphrase (PBKDF2-SHA256, 600,000 rounds).
          On the new device choose “Restore from a backup file”. Message history stays here.
        </p>
        <form
          class="stack"
          onSubmit={(e) => {
            e.preventDefault();
            void exportNow();
          }}
        >
          <label for="export-pass">Passphrase</label>
          <input
            id="export-pass"
            type="password"
            autocomplete="new-password"
            minLength={MIN_PASSPHRASE_LENGTH}
            value={pass()}
            onInput={(e) => setPass(e.currentTarget.value)}
          />
          <label for="export-pass2">Repeat passphrase</label>
          <input
            id="export-pass2"
            type="password"
            autocomplete="new-password"
            value={pass2()}
            onInput={(e) => setPass2(e.currentTarget.value)}
          />
          <Show when={msg()}>
            {(m) => (
              <p class={m().ok ? "ok-note" : "error"} role={m().ok ? "status" : "alert"}>
                {m().text}
              </p>
            )}
          </Show>
          <button type="submit" class="primary" disabled={busy()} data-testid="export-identity">
            {busy() ? "Encrypting…" : "Export identity file"}
          </button>
        </form>
      </section>
      <LockSection />
      <ThemeSection />
      <section class="settings-section" aria-labelledby="settings-presence">
        <h3 id="settings-presence">Who sees you online</h3>
        <p class="help" id="settings-presence-help">
          People you have written to and members of your groups see when you are online. With
          “Everyone on this hub”, so does everyone else who chose it too. Anyone can still find you
          by name.
        </p>
        <div class="segmented" role="radiogroup" aria-labelledby="settings-presence">
          <For each={["contacts", "everyone"] as const}>
            {(choice) => (
              <label class="segment">
                <input
                  type="radio"
                  name="presence-scope"
                  value={choice}
                  data-testid={`presence-${choice}`}
                  disabled={state.presenceScope === null}
                  checked={state.presenceScope === choice}
                  onChange={() => void actions.setPresence(choice)}
                />
                <span>{PRESENCE_LABEL[choice]}</span>
              </label>
            )}
          </For>
        </div>
      </section>
      <section class="settings-section" aria-labelledby="settings-notify">
        <h3 id="settings-notify">Notifications</h3>
        <Show
          when={notifyPerm() === "default"}
          fallback={
            <p class="help">
              {notifyPerm() === "granted"
                ? "On: Parley tells you about new messages, also while it is closed."
                : notifyPerm() === "denied"
                  ? "Blocked in your browser settings."
                  : "Not supported by this browser."}
            </p>
          }
        >
          <button
            type="button"
            class="secondary"
            data-testid="settings-enable-notifications"
            onClick={() => void actions.enableNotifications()}
          >
            Enable notifications
          </button>
        </Show>
        <p class="help" id="settings-notify-content">
          What a notification shows on this device. Others can read your lock screen; the service
          that delivers the wake-up (your browser’s vendor) never sees any of it.
        </p>
        <div class="segmented" role="radiogroup" aria-labelledby="settings-notify-content">
          <For each={NOTIFY_CONTENTS}>
            {(choice) => (
              <label class="segment">
                <input
                  type="radio"
                  name="notify-content"
                  value={choice}
                  data-testid={`notify-${choice}`}
                  checked={notifyContent() === choice}
                  onChange={() => void actions.setNotifyContent(choice)}
                />
                <span>{NOTIFY_LABEL[choice]}</span>
              </label>
            )}
          </For>
        </div>
      </section>
      <section class="settings-section" aria-labelledby="settings-privacy">
        <h3 id="settings-privacy">Typing and read receipts</h3>
        <label class="option-row">
          <input
            type="checkbox"
            data-testid="pref-typing"
            checked={messaging.prefs().typing}
            onChange={(e) => void messaging.setPref({ typing: e.currentTarget.checked })}
          />
          <span>Show others when I am typing</span>
        </label>
        <label class="option-row">
          <input
            type="checkbox"
            data-testid="pref-read-receipts"
            checked={messaging.prefs().readReceipts}
            onChange={(e) => void messaging.setPref({ readReceipts: e.currentTarget.checked })}
          />
          <span>Read receipts</span>
        </label>
        <p class="help">
          Read receipts tell people in 1:1 chats that you have seen their messages. Off, you send
          none and see none.
        </p>
      </section>
    </Modal>
  );
}
