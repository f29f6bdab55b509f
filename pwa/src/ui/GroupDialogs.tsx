/**
 * Closed groups in the UI (PROTOCOL.md §9.7): creating a group (name, title, who can join), the
 * group's access panel in the members dialog (policy, invite a contact, copy an invite link) and
 * the admin controls on each member row (remove, make admin). Thin: the engine decides and signs.
 */
import { createMemo, createSignal, For, Show } from "solid-js";
import type { ContactInfo, GroupAccessSummary } from "../../../shared/core/client-api";
import type { Invite } from "../../../shared/core/content";
import { useParley } from "../app/context";
import type { ConvView } from "../state/model";
import { nameProblem } from "../state/names";
import { Modal } from "./Dialogs";
import { NameHint } from "./NameHint";

/** What a group's policy means, in words (§9.7.1). */
export function policyText(access: GroupAccessSummary | undefined): string {
  if (!access || access.policy === "open") return "Anyone on this hub can join.";
  return "Invite only: members invite people, or admins share an invite link.";
}

export function NewGroupDialog(props: { onClose: () => void }) {
  const { actions } = useParley();
  const [name, setName] = createSignal("");
  const [title, setTitle] = createSignal("");
  const [policy, setPolicy] = createSignal<"invite" | "open">("invite");
  const [tried, setTried] = createSignal(false);
  let input: HTMLInputElement | undefined;
  let form: HTMLFormElement | undefined;
  return (
    <Modal
      title="New group"
      onClose={props.onClose}
      testid="new-group-dialog"
      initialFocus={() => input}
    >
      <form
        ref={form}
        class="stack"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          if (nameProblem(name()) !== null) {
            setTried(true);
            input?.focus();
            return;
          }
          form?.closest("dialog")?.close();
          void actions.createGroup(name(), title(), policy());
        }}
      >
        <label for="new-group-name">Group name (its address)</label>
        <input
          id="new-group-name"
          ref={input}
          data-testid="new-group-name"
          maxLength={64}
          autocapitalize="none"
          spellcheck={false}
          aria-describedby="new-group-problem"
          value={name()}
          onInput={(e) => setName(e.currentTarget.value)}
        />
        <NameHint
          id="new-group-problem"
          value={name()}
          showEmpty={tried()}
          onAccept={(n) => {
            setName(n);
            input?.focus();
          }}
        />
        <label for="new-group-title">Title</label>
        <input
          id="new-group-title"
          data-testid="new-group-title"
          maxLength={100}
          value={title()}
          onInput={(e) => setTitle(e.currentTarget.value)}
        />
        <fieldset class="stack">
          <legend>Who can join</legend>
          <label>
            <input
              type="radio"
              name="new-group-policy"
              data-testid="policy-invite"
              checked={policy() === "invite"}
              onChange={() => setPolicy("invite")}
            />{" "}
            Invite only — members invite people, admins can share a link
          </label>
          <label>
            <input
              type="radio"
              name="new-group-policy"
              data-testid="policy-open"
              checked={policy() === "open"}
              onChange={() => setPolicy("open")}
            />{" "}
            Open — anyone on this hub can join
          </label>
        </fieldset>
        <button type="submit" class="primary" data-testid="create-group">
          Create group
        </button>
      </form>
    </Modal>
  );
}

/** The group's access panel: policy, inviting and links (members dialog). */
export function GroupAccessPanel(props: { conv: ConvView }) {
  const { state, actions } = useParley();
  const [who, setWho] = createSignal("");
  const [link, setLink] = createSignal<string | null>(null);
  const access = () => props.conv.access;
  // People we have a 1:1 conversation with and who are not in the group yet.
  const candidates = createMemo(() => {
    const inGroup = new Set(props.conv.members.map((m) => m.username));
    return Object.values(state.convs)
      .filter((c) => c.kind === "direct" && !inGroup.has(c.name))
      .map((c) => c.name)
      .sort();
  });
  return (
    <div class="stack" data-testid="group-access">
      <Show when={access()?.title}>
        {(t) => (
          <p>
            <strong data-testid="group-title">{t()}</strong>
          </p>
        )}
      </Show>
      <p class="muted" data-testid="group-policy">
        {policyText(access())}
      </p>
      <Show when={access()?.refused}>
        {(r) => (
          <p class="pill tone-bad" role="alert" data-testid="group-refused">
            {r()}
          </p>
        )}
      </Show>
      <Show when={access() && props.conv.epoch >= 0}>
        <form
          class="join-row"
          onSubmit={(e) => {
            e.preventDefault();
            if (who() !== "") void actions.inviteToGroup(props.conv.name, who());
            setWho("");
          }}
        >
          <label for="invite-who" class="visually-hidden">
            Invite a contact
          </label>
          <select
            id="invite-who"
            data-testid="invite-who"
            value={who()}
            onChange={(e) => setWho(e.currentTarget.value)}
          >
            <option value="">Invite a contact…</option>
            <For each={candidates()}>{(n) => <option value={n}>{n}</option>}</For>
          </select>
          <button type="submit" class="small" data-testid="invite-send" disabled={who() === ""}>
            Invite
          </button>
        </form>
      </Show>
      <Show when={access()?.isAdmin}>
        <div class="join-row">
          <button
            type="button"
            class="small"
            data-testid="invite-link"
            onClick={async () => {
              const url = await actions.createInviteLink(props.conv.name);
              setLink(url);
              if (url !== null) void navigator.clipboard?.writeText(url).catch(() => undefined);
            }}
          >
            Copy invite link
          </button>
          <Show when={(access()?.links ?? 0) > 0}>
            <button
              type="button"
              class="small"
              data-testid="revoke-links"
              onClick={() => {
                setLink(null);
                void actions.revokeInviteLinks(props.conv.name);
              }}
            >
              Revoke links ({access()?.links})
            </button>
          </Show>
        </div>
        <Show when={link()}>
          {(l) => (
            <input
              readOnly
              aria-label="Invite link"
              data-testid="invite-link-url"
              value={l()}
              onFocus={(e) => e.currentTarget.select()}
            />
          )}
        </Show>
      </Show>
    </div>
  );
}

/** Role pill and admin controls of one member row. */
export function MemberRole(props: { conv: ConvView; member: ContactInfo }) {
  const { state, actions } = useParley();
  const access = () => props.conv.access;
  const isAdmin = () => access()?.admins.includes(props.member.username) ?? false;
  const me = () => props.member.username === state.me?.username;
  return (
    <>
      <Show when={isAdmin()}>
        <span class="pill small-pill" data-testid={`role-admin-${props.member.username}`}>
          admin
        </span>
      </Show>
      <Show when={access()?.isAdmin && me() && (access()?.admins.length ?? 0) > 1}>
        <button
          type="button"
          class="small"
          data-testid="step-down"
          onClick={() => void actions.demoteMember(props.conv.name, props.member.username)}
        >
          Step down as admin
        </button>
      </Show>
      <Show when={access()?.isAdmin && !me()}>
        <Show
          when={!isAdmin()}
          fallback={
            <button
              type="button"
              class="small"
              data-testid={`demote-${props.member.username}`}
              onClick={() => void actions.demoteMember(props.conv.name, props.member.username)}
            >
              Remove admin
            </button>
          }
        >
          <button
            type="button"
            class="small"
            data-testid={`promote-${props.member.username}`}
            onClick={() => void actions.promoteMember(props.conv.name, props.member.username)}
          >
            Make admin
          </button>
        </Show>
        <button
          type="button"
          class="small"
          data-testid={`remove-${props.member.username}`}
          onClick={() => void actions.removeMember(props.conv.name, props.member.username)}
        >
          Remove
        </button>
      </Show>
    </>
  );
}

/** A received invitation in a 1:1 chat: accept it (join with the inviter's signed add). */
export function InviteButton(props: { invite: Invite }) {
  const { actions } = useParley();
  return (
    <button
      type="button"
      class="small"
      data-testid={`accept-invite-${props.invite.group}`}
      onClick={() => void actions.acceptInvite(props.invite)}
    >
      Join #{props.invite.group}
    </button>
  );
}
