/** Connected clients, keyed by their stable client id (a reconnect replaces the old socket). */

/** What the coordinator knows of a connected client. */
export interface ClientEntry<S> {
  clientId: string;
  socket: S;
  platform: string;
  backend: string;
  connectedAt: number;
}

/** The registry of connected clients, with waiters for "at least n connected". */
export class ClientRegistry<S extends { id: string }> {
  private readonly clients = new Map<string, ClientEntry<S>>();
  private waiters: { n: number; resolve: () => void }[] = [];

  /** Register a client; returns the entry it replaced (same id, older socket), if any. */
  add(entry: ClientEntry<S>): ClientEntry<S> | undefined {
    const previous = this.clients.get(entry.clientId);
    this.clients.set(entry.clientId, entry);
    this.notify();
    return previous;
  }

  /** Remove a client if this socket is still the one registered; returns whether it was. */
  remove(clientId: string, socketId: string): boolean {
    const entry = this.clients.get(clientId);
    if (entry === undefined || entry.socket.id !== socketId) return false;
    this.clients.delete(clientId);
    return true;
  }

  has(clientId: string): boolean {
    return this.clients.has(clientId);
  }

  get(clientId: string): ClientEntry<S> | undefined {
    return this.clients.get(clientId);
  }

  get size(): number {
    return this.clients.size;
  }

  ids(): string[] {
    return [...this.clients.keys()];
  }

  entries(): ClientEntry<S>[] {
    return [...this.clients.values()];
  }

  /** Resolves once at least `n` clients are connected. */
  waitFor(n: number): Promise<void> {
    if (this.clients.size >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  private notify(): void {
    const ready = this.waiters.filter((w) => this.clients.size >= w.n);
    this.waiters = this.waiters.filter((w) => this.clients.size < w.n);
    for (const w of ready) w.resolve();
  }
}
