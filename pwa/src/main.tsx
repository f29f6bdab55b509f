/** Parley PWA entry (placeholder until the PWA issue #5). */
import { render } from "solid-js/web";

function App() {
  return <main>Parley</main>;
}

const root = document.getElementById("root");
if (root) render(() => <App />, root);
