/** The wire protocol version, exchanged in the socket.io handshake and checked before anything else. */

/**
 * Bumped on every incompatible change of an event, a message or its encoding. A coordinator
 * refuses clients that speak another version, with a `PROTOCOL_VERSION` error naming both.
 */
export const PROTOCOL_VERSION = 5;
