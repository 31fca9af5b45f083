/** socket.io event maps, typed once for both directions. */
import type { Reply } from "./errors.js";
import type { HandshakeChallenge } from "../aggregation/signing.js";
import type {
  FitFailure,
  Notice,
  RunDone,
  SessionGrant,
  TaskSpec,
  UpdateReceipt,
} from "./messages.js";

/** Events the coordinator emits. */
export interface ServerToClientEvents {
  /**
   * Prove the identity of the handshake: sign the challenge (`signChallenge`) and answer with
   * the base64 signature. Only where the coordinator authenticates clients; nothing else is
   * sent before the answer checks out.
   */
  "auth:challenge": (
    challenge: HandshakeChallenge,
    ack: (answer: { signature: string }) => void,
  ) => void;
  /** The connection is closed for this reason: refused (fatal) or `DISPLACED` (reconnect). */
  notice: (notice: Notice) => void;
  /**
   * The task, sent once after the handshake; at an id's first join (coordinators without
   * authentication) with the secret that later handshakes under that id must carry.
   */
  task: (task: TaskSpec, grant?: SessionGrant) => void;
  /** A msgpack-encoded `FitRequest`, broadcast to the round's cohort. */
  "round:fit": (payload: Uint8Array) => void;
  /** The run has ended. */
  "run:done": (info: RunDone) => void;
  /**
   * A msgpack-encoded secure-aggregation step (`SecureStep`); the client answers with its
   * msgpack-encoded reply for that phase, or an error code.
   */
  "secagg:step": (payload: Uint8Array, ack: (reply: Reply<Uint8Array>) => void) => void;
  /**
   * A msgpack-encoded `EvaluateRequest` (signed like models); the client answers with its
   * msgpack-encoded `EvaluateResult`, or an error code (`NO_EVAL_DATA`).
   */
  "round:evaluate": (payload: Uint8Array, ack: (reply: Reply<Uint8Array>) => void) => void;
}

/** Events clients emit. */
export interface ClientToServerEvents {
  /** A msgpack-encoded `FitResult`; the coordinator acknowledges or answers an error code. */
  "fit:result": (payload: Uint8Array, ack: (reply: Reply<UpdateReceipt>) => void) => void;
  /** The client's fit of a round failed: the round stops waiting for it. */
  "fit:error": (report: FitFailure) => void;
}

/** Data the coordinator keeps on each socket. */
export interface SocketData {
  clientId: string;
  platform: string;
  backend: string;
  /** Base64 Ed25519 key the client authenticated with, where authentication is on. */
  publicKey: string | null;
  /** The join token that admitted that key, where it is not on the list. */
  token: { expiresAt: number; signature: string } | null;
}
