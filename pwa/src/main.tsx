/** Parley PWA entry: create the controller, register the service worker, render. */

import { useRegisterSW } from "virtual:pwa-register/solid";
import { createEffect } from "solid-js";
import { render } from "solid-js/web";
import { App } from "./app/App";
import { createParley } from "./app/controller";
import "./styles.css";

const parley = createParley();

function Root() {
  // The new worker waits ("prompt"): the user chooses when to reload into the new version.
  const {
    needRefresh: [needRefresh],
    updateServiceWorker,
  } = useRegisterSW({ immediate: true });
  createEffect(() => {
    if (!needRefresh()) return;
    parley.toasts.show({
      kind: "update",
      text: "A new version of Parley is available.",
      sticky: true,
      action: { label: "Reload", run: () => void updateServiceWorker(true) },
    });
  });
  return <App parley={parley} />;
}

const root = document.getElementById("root");
if (root) {
  render(() => <Root />, root);
  parley.init();
}
