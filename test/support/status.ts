/**
 * The status word the PWA would show for a conversation (pwa/src/state/status.ts), read from an
 * engine's facts and its last `connection` event: tests assert on what a person would see.
 */
import { conversationStatus } from "../../pwa/src/state/status";
import type {
  ConversationId,
  ConversationSummary,
  ParleyEvent,
} from "../../shared/core/client-api";

export function statusOf(
  u: { client: { conversations(): ConversationSummary[] }; events: readonly ParleyEvent[] },
  id: ConversationId,
): string | undefined {
  const sum = u.client.conversations().find((c) => c.id === id);
  if (sum === undefined) return undefined;
  const link = u.events.filter((e) => e.type === "connection").at(-1);
  return conversationStatus(sum, link?.type === "connection" && link.state === "online");
}
