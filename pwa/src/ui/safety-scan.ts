/**
 * Comparing safety numbers by camera: the verify dialog shows our number as a QR code
 * (`parley-safety-number:v1:<60 digits>`, the same for both people, PROTOCOL.md §3.7), and where
 * the browser offers `BarcodeDetector` the dialog can scan the other person's code and say whether
 * it matches. The verdict is pure (unit-tested); the camera part only feeds it decoded strings.
 */

export const SAFETY_QR_PREFIX = "parley-safety-number:v1:";

export function safetyQrText(safetyNumber: string): string {
  return `${SAFETY_QR_PREFIX}${safetyNumber}`;
}

export type ScanVerdict = "match" | "mismatch" | "not_parley";

/** What a scanned code says about `ours`: a Parley safety number equal to it, another, or none. */
export function scanVerdict(payload: string, ours: string): ScanVerdict {
  const p = payload.trim();
  if (!p.startsWith(SAFETY_QR_PREFIX)) return "not_parley";
  const digits = p.slice(SAFETY_QR_PREFIX.length);
  if (!/^\d{60}$/.test(digits)) return "not_parley";
  return digits === ours ? "match" : "mismatch";
}

/** The part of the Shape Detection API Parley uses (not in TypeScript's DOM types yet). */
export interface BarcodeDetectorLike {
  detect(source: HTMLVideoElement): Promise<Array<{ rawValue: string }>>;
}
type BarcodeDetectorCtor = new (options: { formats: string[] }) => BarcodeDetectorLike;

function detectorCtor(): BarcodeDetectorCtor | null {
  if (typeof window === "undefined") return null;
  const ctor = (window as unknown as { BarcodeDetector?: BarcodeDetectorCtor }).BarcodeDetector;
  return typeof ctor === "function" ? ctor : null;
}

/** Can this browser scan a QR code from the camera? */
export function canScan(): boolean {
  return detectorCtor() !== null && typeof navigator.mediaDevices?.getUserMedia === "function";
}

/**
 * Point the camera at `video` and call `onCode` with every decoded QR payload until the returned
 * stop function is called. Rejects when there is no detector or the camera is refused.
 */
export async function startScanning(
  video: HTMLVideoElement,
  onCode: (payload: string) => void,
): Promise<() => void> {
  const Ctor = detectorCtor();
  if (!Ctor) throw new Error("no BarcodeDetector");
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { facingMode: "environment" },
    audio: false,
  });
  const detector = new Ctor({ formats: ["qr_code"] });
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  video.srcObject = stream;
  await video.play().catch(() => undefined);
  const tick = async () => {
    if (stopped) return;
    try {
      for (const code of await detector.detect(video)) onCode(code.rawValue);
    } catch {
      // A frame the detector could not read (camera still starting): try the next one.
    }
    if (!stopped) timer = setTimeout(() => void tick(), 200);
  };
  void tick();
  return () => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
    for (const t of stream.getTracks()) t.stop();
    video.srcObject = null;
  };
}
