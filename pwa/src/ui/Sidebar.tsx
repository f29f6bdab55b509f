/**
 * Left pane: groups (broadcast first; join any other by name) and people (everyone online plus
 * past 1:1 chats, or anyone by username through "New chat"), each with unread badge, last-message
 * preview, and a warning mark when a contact's safety number changed.
 */
import { createMemo, createSignal, For, Show } from "solid-js";
import { useParley } from "../app/context";
import {
  type ConvView,
  convIdOf,
  isMember,
  lastMessage,
  peopleRows,
  sortedConvs,
} from "../state/model";
import { nameProblem } from "../state/names";
import { NewChatDialog } from "./Dialogs";
import { avatarClass, formatTime } from "./format";
import { NewGroupDialog } from "./GroupDialogs";
import { NameHint } from "./NameHint";

function Preview(props: { conv: ConvView | undefined; fallback: string }) {
  const last = createMemo(() => (props.conv ? lastMessage(props.conv) : undefined));
  return (
    <span class="row-preview" dir="auto">
      <Show when={last()} fallback={props.fallback}>
        {(m) => (
          <>
            <Show when={m().direction === "out"}>
              <span class="muted">You: </span>
            </Show>
            <Show when={m().direction === "in" && props.conv?.kind === "group"}>
              <span class="muted">{m().from}: </span>
            </Show>
            {m().text.slice(0, 200)}
          </>
        )}
      </Show>
    </span>
  );
}

function Badge(props: { n: number; name: string }) {
  return (
    <Show when={props.n > 0}>
      <span class="badge" data-testid="unread">
        <span aria-hidden="true">{props.n > 99 ? "99+" : props.n}</span>
        <span class="visually-hidden">
          {props.n} unread from {props.name}
        </span>
      </span>
    </Show>
  );
}

export function Sidebar() {
  const { state, actions } = useParley();
  const [groupName, setGroupName] = createSignal("");
  const [groupTried, setGroupTried] = createSignal(false);
  const [newChat, setNewChat] = createSignal(false);
  const [newGroup, setNewGroup] = createSignal(false);
  const lists = createMemo(() => sortedConvs(state));
  /** Archived chats are listed on their own, under "Archived" (local only). */
  const groups = createMemo(() => lists().groups.filter((g) => !g.archived));
  const people = createMemo(() => peopleRows(state).filter((p) => !p.conv?.archived));
  const archived = createMemo(() =>
    [...lists().groups, ...lists().directs].filter((c) => c.archived),
  );
  let groupInput: HTMLInputElement | undefined;

  const lastAt = (c: ConvView | undefined) => {
    const m = c ? lastMessage(c) : undefined;
    return m ? formatTime(m.at) : "";
  };

  return (
    <nav class="sidebar" aria-label="Conversations">
      <section aria-labelledby="groups-heading">
        <div class="section-head">
          <h2 id="groups-heading" class="section-title">
            Groups
          </h2>
          <button
            type="button"
            class="small"
            data-testid="new-group"
            title="Create a group: invite only, or open to anyone on this hub"
            onClick={() => setNewGroup(true)}
          >
            New group
          </button>
        </div>
        <ul class="rows">
          <For each={groups()}>
            {(g) => {
              const member = () => isMember(g);
              return (
                <li class="row-wrap">
                  <button
                    type="button"
                    class="row"
                    classList={{ selected: state.selected === g.id }}
                    aria-current={state.selected === g.id ? "true" : undefined}
                    data-testid={`group-${g.name}`}
                    onClick={() => actions.select(g.id)}
                  >
                    <span class="avatar group-avatar" aria-hidden="true">
                      #
                    </span>
                    <span class="row-main">
                      <span class="row-top">
                        <span class="row-name" title={`#${g.name}`}>
                          #{g.name}
                        </span>
                        <Show when={g.muted}>
                          <span
                            class="muted-mark"
                            role="img"
                            aria-label="muted"
                            data-testid="muted-mark"
                          >
                            🔕
                          </span>
                        </Show>
                        <span class="row-time">{lastAt(g)}</span>
                      </span>
                      <Preview
                        conv={g}
                        fallback={
                          member()
                            ? `${g.members.length} member${g.members.length === 1 ? "" : "s"}`
                            : "Not joined"
                        }
                      />
                    </span>
                    <Badge n={g.unread} name={`#${g.name}`} />
                  </button>
                  <Show when={!member()}>
                    <button
                      type="button"
                      class="small"
                      data-testid={`join-${g.name}`}
                      aria-label={`Join #${g.name}`}
                      onClick={() => void actions.joinGroup(g.name)}
                    >
                      Join
                    </button>
                  </Show>
                </li>
              );
            }}
          </For>
        </ul>
        <form
          class="join-form"
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            if (nameProblem(groupName()) !== null) {
              setGroupTried(true);
              groupInput?.focus();
              return;
            }
            void actions.joinGroup(groupName());
            setGroupName("");
            setGroupTried(false);
          }}
        >
          <div class="join-row">
            <label for="join-group" class="visually-hidden">
              Join a group by name
            </label>
            <input
              id="join-group"
              ref={groupInput}
              placeholder="Join a group by name"
              maxLength={64}
              autocapitalize="none"
              spellcheck={false}
              aria-describedby="join-group-problem"
              value={groupName()}
              onInput={(e) => setGroupName(e.currentTarget.value)}
            />
            <button type="submit" class="small">
              Join
            </button>
          </div>
          <NameHint
            id="join-group-problem"
            value={groupName()}
            showEmpty={groupTried()}
            onAccept={(n) => {
              setGroupName(n);
              groupInput?.focus();
            }}
          />
        </form>
      </section>
      <section aria-labelledby="people-heading">
        <div class="section-head">
          <h2 id="people-heading" class="section-title">
            People <span class="count">{people().filter((p) => p.online).length} online</span>
          </h2>
          <button
            type="button"
            class="small"
            data-testid="new-chat"
            title="Write to anyone on this relay by username"
            onClick={() => setNewChat(true)}
          >
            New chat
          </button>
        </div>
        <ul class="rows">
          <For
            each={people()}
            fallback={
              <li class="empty">
                Nobody else is online yet. Share this address, or start a New chat by username.
              </li>
            }
          >
            {(p) => (
              <li class="row-wrap">
                <button
                  type="button"
                  class="row"
                  classList={{ selected: state.selected === convIdOf("direct", p.name) }}
                  aria-current={state.selected === convIdOf("direct", p.name) ? "true" : undefined}
                  data-testid={`user-${p.name}`}
                  data-online={p.online ? "true" : "false"}
                  onClick={() => actions.openChat(p.name)}
                >
                  <span class={avatarClass(p.name)} aria-hidden="true">
                    {p.name.slice(0, 1).toUpperCase()}
                    <span class="presence" classList={{ on: p.online }} />
                  </span>
                  <span class="row-main">
                    <span class="row-top">
                      <span class="row-name-line">
                        <span class="row-name" title={p.name}>
                          {p.name}
                        </span>
                        <Show when={p.keyChanged}>
                          <span
                            class="key-changed-mark"
                            role="img"
                            aria-label="safety number changed"
                            title="Safety number changed: compare it before you continue"
                            data-testid="key-changed-mark"
                          >
                            ⚠
                          </span>
                        </Show>
                        <Show when={p.conv?.muted}>
                          <span
                            class="muted-mark"
                            role="img"
                            aria-label="muted"
                            data-testid="muted-mark"
                          >
                            🔕
                          </span>
                        </Show>
                        <Show when={p.verified && !p.keyChanged}>
                          <span class="verified-mark" title="Safety number verified">
                            ✓<span class="visually-hidden"> verified</span>
                          </span>
                        </Show>
                      </span>
                      <span class="row-time">{lastAt(p.conv)}</span>
                    </span>
                    <Preview conv={p.conv} fallback={p.online ? "Online" : "Offline"} />
                  </span>
                  <span class="visually-hidden">{p.online ? "online" : "offline"}</span>
                  <Badge n={p.conv?.unread ?? 0} name={p.name} />
                </button>
              </li>
            )}
          </For>
        </ul>
      </section>
      <Show when={archived().length > 0}>
        <details class="archived" data-testid="archived">
          <summary class="section-title">Archived ({archived().length})</summary>
          <ul class="rows">
            <For each={archived()}>
              {(c) => (
                <li class="row-wrap">
                  <button
                    type="button"
                    class="row"
                    classList={{ selected: state.selected === c.id }}
                    data-testid={`archived-${c.name}`}
                    onClick={() =>
                      c.kind === "direct" ? actions.openChat(c.name) : actions.select(c.id)
                    }
                  >
                    <span class="row-main">
                      <span class="row-name-line">
                        <span class="row-name">
                          {c.kind === "group" ? "#" : ""}
                          {c.name}
                        </span>
                        <Show when={c.muted}>
                          <span
                            class="muted-mark"
                            role="img"
                            aria-label="muted"
                            data-testid="muted-mark"
                          >
                            🔕
                          </span>
                        </Show>
                      </span>
                      <Preview conv={c} fallback="" />
                    </span>
                    <Badge n={c.unread} name={c.name} />
                  </button>
                </li>
              )}
            </For>
          </ul>
        </details>
      </Show>
      <Show when={newChat()}>
        <NewChatDialog onClose={() => setNewChat(false)} />
      </Show>
      <Show when={newGroup()}>
        <NewGroupDialog onClose={() => setNewGroup(false)} />
      </Show>
    </nav>
  );
}
