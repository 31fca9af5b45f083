/** The coordinator's API token in its pages: asked for on a 401, kept for the tab's session, sent as a bearer. */

/** Where a tab keeps the token (`sessionStorage`: gone with the tab, never sent unasked). */
export const TOKEN_KEY = "cohort.apiToken";

/**
 * `fetch` with the tab's API token as `Authorization: Bearer`. On a 401 it asks for the token
 * (saying the last one was refused, when one was sent), keeps it and tries again; every other
 * answer is returned as it is. Concurrent calls share one question.
 */
export async function fetchWithToken(url: string | URL, init: RequestInit = {}): Promise<Response> {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = new Headers(init.headers);
    if (token !== null) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(url, { ...init, headers });
    if (response.status !== 401) return response;
    // Someone else answered the question meanwhile: try their token before asking again.
    if (sessionStorage.getItem(TOKEN_KEY) !== token) continue;
    sessionStorage.setItem(TOKEN_KEY, await ask(token !== null));
  }
}

let asking: Promise<string> | null = null;

function ask(refused: boolean): Promise<string> {
  asking ??= askWithForm(refused).finally(() => (asking = null));
  return asking;
}

/** A small form above the page; resolves with what the user submits (trimmed, not empty). */
function askWithForm(refused: boolean): Promise<string> {
  const form = document.createElement("form");
  form.id = "token-form";
  form.className = "token";
  const label = document.createElement("label");
  label.htmlFor = "token-input";
  label.textContent = refused
    ? "That token was refused. The coordinator's API token:"
    : "This coordinator asks for its API token:";
  const input = document.createElement("input");
  input.id = "token-input";
  input.type = "password";
  input.autocomplete = "off";
  input.required = true;
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Open";
  form.append(label, input, button);
  document.body.prepend(form);
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (token === "") return;
      form.remove();
      resolve(token);
    });
  });
}
