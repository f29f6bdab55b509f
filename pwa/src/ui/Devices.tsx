/**
 * Linked devices (PROTOCOL.md §4.6–§4.8). On first run: "Link to a device you already use" names
 * this browser and shows the link code, in groups of four and as a QR code, until another device
 * of the account answers. In Settings → Devices: our devices as our signed list names them, "Link
 * a new device" (type the code, or scan it where the browser has BarcodeDetector), a confirmation
 * naming the device and how much earlier history goes with it (§4.8.5), and "Remove" for each
 * other device. The checks are the engine's; this only
 * words them (wording.ts).
 */
import { createSignal, For, onCleanup, onMount, Show } from "solid-js";
import type { LinkRequest } from "../../../shared/core/client-api";
import { parseLinkCode } from "../../../shared/core/linking";
import { useParley } from "../app/context";
import { HISTORY_RANGES, type HistoryRange } from "../storage/history-archive";
import { Modal } from "./Dialogs";
import { formatDay, formatTime } from "./format";
import { Logo } from "./Logo";
import { LazyQr } from "./lazy";
import { Centered } from "./Screens";
import { canScan, startScanning } from "./safety-scan";
import { guessDeviceName, LINK_WORDS } from "./wording";

/** First run, next to "create" and "restore": name this device and ask for a code. */
export function LinkStart() {
  const { actions } = useParley();
  const [name, setName] = createSignal(guessDeviceName(navigator.userAgent));
  return (
    <form
      class="stack"
      onSubmit={(e) => {
        e.preventDefault();
        const n = name().trim();
        if (n.length > 0) void actions.startLinking(n.slice(0, 64));
      }}
    >
      <p class="help">{LINK_WORDS.startHelp}</p>
      <label for="link-device-name">{LINK_WORDS.nameLabel}</label>
      <input
        id="link-device-name"
        data-testid="link-device-name"
        maxLength={64}
        aria-describedby="link-device-name-help"
        value={name()}
        onInput={(e) => setName(e.currentTarget.value)}
      />
      <p id="link-device-name-help" class="help">
        {LINK_WORDS.nameHelp}
      </p>
      <button type="submit" class="secondary" data-testid="link-start">
        {LINK_WORDS.showCode}
      </button>
    </form>
  );
}

/** The new device waiting: the code to type or scan, until the answer comes or it expires. */
export function LinkingScreen(props: { code: string | null; expired: boolean; error?: string }) {
  const { actions } = useParley();
  return (
    <Centered>
      <Logo size={48} />
      <h1>{LINK_WORDS.waitingTitle}</h1>
      <p class="muted">{LINK_WORDS.waitingHelp}</p>
      <Show when={props.code !== null && !props.expired ? props.code : null}>
        {(code) => (
          <div class="link-code-box">
            <LazyQr text={code()} label="Link code as a QR code" />
            <p class="link-code" data-testid="link-code">
              {code()}
            </p>
            <p class="help" role="status" aria-live="polite">
              {LINK_WORDS.waiting}
            </p>
          </div>
        )}
      </Show>
      <Show when={props.error}>
        <p class="error" role="alert" data-testid="link-error">
          {props.error}
        </p>
      </Show>
      <Show when={props.expired}>
        <p class="error" role="alert" data-testid="link-expired">
          {LINK_WORDS.expired}
        </p>
      </Show>
      <div class="row-actions centered">
        <Show when={props.expired}>
          <button
            type="button"
            class="primary"
            data-testid="link-new-code"
            onClick={() => void actions.startLinking(guessDeviceName(navigator.userAgent))}
          >
            {LINK_WORDS.newCode}
          </button>
        </Show>
        <button
          type="button"
          class="secondary"
          data-testid="link-cancel"
          onClick={() => actions.cancelLinking()}
        >
          {LINK_WORDS.cancel}
        </button>
      </div>
    </Centered>
  );
}

/** The camera, until it sees something that reads as a link code. */
function CodeScanner(props: { onCode: (code: string) => void; onFail: () => void }) {
  let video: HTMLVideoElement | undefined;
  let stop: (() => void) | null = null;
  let gone = false;
  onMount(() => {
    if (!video) return;
    startScanning(video, (payload) => {
      try {
        parseLinkCode(payload);
      } catch {
        return; // another QR code in view: keep looking
      }
      stop?.();
      stop = null;
      props.onCode(payload);
    }).then(
      (s) => {
        if (gone) s();
        else stop = s;
      },
      () => props.onFail(),
    );
  });
  onCleanup(() => {
    gone = true;
    stop?.();
  });
  return <video ref={video} class="scanner-video" muted playsinline aria-label="Camera view" />;
}

/** Settings → Devices. */
export function DevicesSection() {
  const { actions } = useParley();
  const [code, setCode] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  const [error, setError] = createSignal<string | null>(null);
  const [request, setRequest] = createSignal<LinkRequest | null>(null);
  const [thisName, setThisName] = createSignal(guessDeviceName(navigator.userAgent));
  // A month by default: enough to pick up every conversation in progress, and bounded.
  const [range, setRange] = createSignal<HistoryRange>("month");
  const [removing, setRemoving] = createSignal<{ id: string; name: string } | null>(null);
  const [scanning, setScanning] = createSignal(false);
  const [note, setNote] = createSignal<string | null>(null);
  const scannable = canScan();
  onMount(() => void actions.refreshDevices());
  const list = () => actions.ownDevices()?.devices ?? [];
  const me = () => actions.ownDevices()?.thisDevice;

  const check = async (text: string) => {
    setError(null);
    setNote(null);
    setBusy(true);
    const r = await actions.fetchLinkOffer(text);
    setBusy(false);
    if ("error" in r) setError(r.error);
    else setRequest(r.request);
  };
  const approve = async () => {
    const req = request();
    if (!req) return;
    setBusy(true);
    const err = await actions.approveLink(
      req,
      thisName().trim().slice(0, 64) || "This device",
      range(),
    );
    setBusy(false);
    setRequest(null);
    if (err) setError(err);
    else {
      setCode("");
      setNote(LINK_WORDS.linked(req.name));
    }
  };
  const remove = async () => {
    const r = removing();
    if (!r) return;
    setBusy(true);
    const err = await actions.removeDevice(r.id);
    setBusy(false);
    setRemoving(null);
    if (err) setError(err);
    else setNote(LINK_WORDS.removed(r.name));
  };

  return (
    <section class="settings-section" aria-labelledby="settings-devices" data-testid="devices">
      <h3 id="settings-devices">{LINK_WORDS.devicesTitle}</h3>
      <p class="help">{LINK_WORDS.devicesHelp}</p>
      <Show when={list().length > 0} fallback={<p class="help">{LINK_WORDS.noList}</p>}>
        <ul class="device-list" data-testid="device-list">
          <For each={list()}>
            {(d) => (
              <li class="device-row" data-testid="device-row">
                <div class="device-info">
                  <span class="device-name ellipsis" title={d.name}>
                    {d.name}
                  </span>
                  <Show when={d.id === me()}>
                    <span class="badge" data-testid="this-device">
                      {LINK_WORDS.thisDevice}
                    </span>
                  </Show>
                  <span class="help">
                    {formatDay(d.addedAt)} {formatTime(d.addedAt)}
                  </span>
                </div>
                <Show when={d.id !== me()}>
                  <button
                    type="button"
                    class="secondary danger"
                    data-testid="device-remove"
                    aria-label={`${LINK_WORDS.remove} ${d.name}`}
                    onClick={() => setRemoving({ id: d.id, name: d.name })}
                  >
                    {LINK_WORDS.remove}
                  </button>
                </Show>
              </li>
            )}
          </For>
        </ul>
      </Show>
      <h4>{LINK_WORDS.linkNew}</h4>
      <form
        class="stack"
        onSubmit={(e) => {
          e.preventDefault();
          void check(code());
        }}
      >
        <label for="link-code-input">{LINK_WORDS.codeLabel}</label>
        <input
          id="link-code-input"
          data-testid="link-code-input"
          autocomplete="off"
          autocapitalize="characters"
          spellcheck={false}
          maxLength={40}
          placeholder="XXXX-XXXX-XXXX-XXXX-XXXX"
          value={code()}
          onInput={(e) => setCode(e.currentTarget.value)}
        />
        <div class="row-actions">
          <button
            type="submit"
            class="primary"
            disabled={busy() || code().trim() === ""}
            data-testid="link-check"
          >
            {LINK_WORDS.check}
          </button>
          <Show when={scannable}>
            <button
              type="button"
              class="secondary"
              data-testid="link-scan"
              aria-pressed={scanning()}
              onClick={() => setScanning(!scanning())}
            >
              {scanning() ? LINK_WORDS.stopScan : LINK_WORDS.scan}
            </button>
          </Show>
        </div>
        <Show when={scanning()}>
          <CodeScanner
            onCode={(c) => {
              setScanning(false);
              setCode(c);
              void check(c);
            }}
            onFail={() => {
              setScanning(false);
              setError("Parley could not use the camera. Type the code instead.");
            }}
          />
        </Show>
      </form>
      <Show when={error()}>
        <p class="error" role="alert" data-testid="devices-error">
          {error()}
        </p>
      </Show>
      <Show when={note()}>
        <p class="ok-note" role="status" data-testid="devices-note">
          {note()}
        </p>
      </Show>
      <Show when={request()}>
        {(req) => (
          <Modal
            title={LINK_WORDS.confirmTitle}
            onClose={() => setRequest(null)}
            testid="link-confirm"
            describedBy="link-confirm-name"
          >
            <p id="link-confirm-name">
              <strong class="name-text">{LINK_WORDS.confirmName(req().name)}</strong>
            </p>
            <p class="help">{LINK_WORDS.confirmHelp}</p>
            <Show when={list().length === 0}>
              <label for="this-device-name">{LINK_WORDS.thisNameLabel}</label>
              <input
                id="this-device-name"
                data-testid="this-device-name"
                maxLength={64}
                value={thisName()}
                onInput={(e) => setThisName(e.currentTarget.value)}
              />
            </Show>
            <label for="link-history">{LINK_WORDS.historyLabel}</label>
            <select
              id="link-history"
              data-testid="link-history"
              value={range()}
              onChange={(e) => setRange(e.currentTarget.value as HistoryRange)}
              aria-describedby="link-history-help"
            >
              <For each={HISTORY_RANGES}>
                {(r) => <option value={r}>{LINK_WORDS.historyRanges[r]}</option>}
              </For>
            </select>
            <p class="help" id="link-history-help">
              {LINK_WORDS.historyHelp}
            </p>
            <div class="row-actions">
              <button
                type="button"
                class="primary"
                disabled={busy()}
                data-testid="link-approve"
                onClick={() => void approve()}
              >
                {LINK_WORDS.approve}
              </button>
              <button type="button" class="secondary" onClick={() => setRequest(null)}>
                {LINK_WORDS.cancel}
              </button>
            </div>
          </Modal>
        )}
      </Show>
      <Show when={removing()}>
        {(r) => (
          <Modal
            title={LINK_WORDS.removeTitle(r().name)}
            onClose={() => setRemoving(null)}
            testid="remove-confirm"
            describedBy="remove-confirm-help"
          >
            <p class="help" id="remove-confirm-help">
              {LINK_WORDS.removeHelp}
            </p>
            <div class="row-actions">
              <button
                type="button"
                class="primary danger"
                disabled={busy()}
                data-testid="remove-approve"
                onClick={() => void remove()}
              >
                {LINK_WORDS.remove}
              </button>
              <button type="button" class="secondary" onClick={() => setRemoving(null)}>
                {LINK_WORDS.cancel}
              </button>
            </div>
          </Modal>
        )}
      </Show>
    </section>
  );
}
