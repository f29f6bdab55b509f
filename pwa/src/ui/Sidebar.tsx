/**
 * Left pane: groups (broadcast first; join any other by name) and people (everyone online plus
 * past 1:1 chats), each with unread badge and last-message preview.
 */
import { createMemo, createSignal, For, Show } from "solid-js";
import type { ContactInfo } from "../../../shared/core/client-api";
import { useParley } from "../app/context";
import { type ConvView, convIdOf, lastMessage, sortedConvs } from "../state/model";
import { avatarClass, formatTime } from "./format";

function Preview(props: { conv: ConvView | undefined; fallback: string }) {
  const last = createMemo(() => (props.conv ? lastMessage(props.conv) : undefined));
  return (
    <span class="row-preview">
      <Show when={last()} fallback={props.fallback}>
        {(m) => (
          <>
            <Show when={m().direction === "out"}>
              <span class="muted">You: </span>
            </Show>
            <Show when={m().direction === "in" && props.conv?.kind === "group"}>
              <span class="muted">{m().from}: </span>
            </Show>
            {m().text}
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
  const lists = createMemo(() => sortedConvs(state));

  /** Online people first (alphabetical), then earlier chats with people now offline. */
  const people = createMemo(() => {
    const me = state.me?.username;
    const online = new Map<string, ContactInfo>();
    for (const u of state.presence) if (u.username !== me) online.set(u.username, u);
    const rows: { name: string; online: boolean; verified: boolean; conv: ConvView | undefined }[] =
      [];
    const isVerified = (c: ConvView | undefined) =>
      c?.status === "verified" || (c?.members[0]?.verified ?? false);
    for (const name of [...online.keys()].sort()) {
      const conv = state.convs[convIdOf("direct", name)];
      rows.push({ name, online: true, verified: isVerified(conv), conv });
    }
    for (const c of lists().directs) {
      if (!online.has(c.name) && c.name !== me) {
        rows.push({ name: c.name, online: false, verified: isVerified(c), conv: c });
      }
    }
    return rows;
  });

  const lastAt = (c: ConvView | undefined) => {
    const m = c ? lastMessage(c) : undefined;
    return m ? formatTime(m.at) : "";
  };

  return (
    <nav class="sidebar" aria-label="Conversations">
      <section aria-labelledby="groups-heading">
        <h2 id="groups-heading" class="section-title">
          Groups
        </h2>
        <ul class="rows">
          <For each={lists().groups}>
            {(g) => {
              const member = () => g.epoch >= 0 || g.joining;
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
                        <span class="row-name">#{g.name}</span>
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
          onSubmit={(e) => {
            e.preventDefault();
            if (groupName().trim()) void actions.joinGroup(groupName());
            setGroupName("");
          }}
        >
          <label for="join-group" class="visually-hidden">
            Join a group by name
          </label>
          <input
            id="join-group"
            placeholder="Join a group by name"
            maxLength={32}
            autocapitalize="none"
            spellcheck={false}
            value={groupName()}
            onInput={(e) => setGroupName(e.currentTarget.value.toLowerCase())}
          />
          <button type="submit" class="small">
            Join
          </button>
        </form>
      </section>
      <section aria-labelledby="people-heading">
        <h2 id="people-heading" class="section-title">
          People <span class="count">{people().filter((p) => p.online).length} online</span>
        </h2>
        <ul class="rows">
          <For
            each={people()}
            fallback={<li class="empty">Nobody else is online yet. Share this address!</li>}
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
                      <span class="row-name">
                        {p.name}
                        <Show when={p.verified}>
                          <span class="verified-mark" title="Safety number verified">
                            {" "}
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
    </nav>
  );
}
