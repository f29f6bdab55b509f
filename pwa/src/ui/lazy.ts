/**
 * Parts of the UI most sessions never open, loaded on first use so the initial JavaScript stays
 * within its budget (test/e2e/build.test.ts): the QR encoder and the linked-devices screens.
 */
import { lazy } from "solid-js";

export const LazyQr = lazy(() => import("./Qr").then((m) => ({ default: m.Qr })));
export const LazyLinkStart = lazy(() =>
  import("./Devices").then((m) => ({ default: m.LinkStart })),
);
export const LazyLinkingScreen = lazy(() =>
  import("./Devices").then((m) => ({ default: m.LinkingScreen })),
);
export const LazyDevicesSection = lazy(() =>
  import("./Devices").then((m) => ({ default: m.DevicesSection })),
);
