/**
 * What is wrong with a typed name, said while typing (state/names.ts), with a one-click valid
 * spelling. Used by onboarding, "New chat" and "Join a group": one rule, one wording.
 */
import { createMemo, Show } from "solid-js";
import { NAME_RULE, nameProblem, suggestName } from "../state/names";

export function NameHint(props: {
  /** The id the input's aria-describedby points at. */
  id: string;
  value: string;
  /** A problem to show instead of the rule check (e.g. "that is you"), or null. */
  extra?: string | null;
  /** Show the empty-name problem too (after a submit attempt), not only typed mistakes. */
  showEmpty?: boolean;
  /** The rule is already on screen next to the field: do not repeat it. */
  ruleShown?: boolean;
  onAccept: (name: string) => void;
}) {
  const problem = createMemo(() => {
    if (props.extra) return props.extra;
    if (props.value.length === 0 && !props.showEmpty) return null;
    const p = nameProblem(props.value);
    return p === null || props.ruleShown ? p : `${p} ${NAME_RULE}`;
  });
  const suggestion = createMemo(() => {
    if (!problem() || props.extra) return null;
    const s = suggestName(props.value);
    return s !== null && s !== props.value ? s : null;
  });
  // Polite live region: announced after typing pauses, never interrupting.
  return (
    <div id={props.id} class="name-hint" aria-live="polite">
      <Show when={problem()}>
        {(p) => (
          <p class="error" data-testid="name-problem">
            {p()}
          </p>
        )}
      </Show>
      <Show when={suggestion()}>
        {(s) => (
          <button
            type="button"
            class="small suggestion"
            data-testid="name-suggestion"
            title={`Use ${s()}`}
            onClick={() => props.onAccept(s())}
          >
            Use “<span class="name-text">{s()}</span>”
          </button>
        )}
      </Show>
    </div>
  );
}
