/* carecoord's live huddle board: a team's tasks by status, kept current over
 * graphql-transport-ws (the vendored graphql-ws client), refetched whole on every
 * (re)connection, when the tab comes back and once a minute. All text from the API is set
 * with textContent; nothing is logged to the console (task titles are PHI). */
(function () {
  "use strict";

  const TOKEN_KEY = "carecoord.board.token";
  const TEAM_ID = /^[A-Za-z0-9_-]{1,128}$/;
  const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
  const REFRESH_MS = 60_000; // overdue flips at midnight; also bounds any missed change
  // The refetch after a connection waits this long, so that the subscription is in place
  // on the server before the snapshot is taken: a change lands in one or the other.
  const SETTLE_MS = 1_000;
  const KEEPALIVE_MS = 15_000;
  const PONG_TIMEOUT_MS = 5_000;
  const RETRY_FETCH_MS = 10_000;
  const COLUMNS = ["TODO", "IN_PROGRESS", "BLOCKED", "DONE", "CANCELLED"];
  const DISCIPLINES = {
    PHYSICIAN: "Physician",
    NURSE_PRACTITIONER: "Nurse practitioner",
    NURSE: "Nurse",
    PHARMACIST: "Pharmacist",
    GENETIC_COUNSELOR: "Genetic counselor",
    SOCIAL_WORKER: "Social worker",
    DIETITIAN: "Dietitian",
    HEALTH_COACH: "Health coach",
    MENTAL_HEALTH: "Mental health",
    CARE_COORDINATOR: "Care coordinator",
  };
  const CONNECTION = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    offline: "Offline — showing the last board received",
    "signed-out": "Signed out",
  };
  const TASK_FIELDS =
    "id title status assigneeId discipline dueDate overdue sensitivity redacted updatedAt " +
    "patientId blockedReason source urgent escalated signalCount";
  const BOARD_QUERY = `query HuddleBoard($teamId: ID!) {
    team(id: $teamId) { id name members { userId name } }
    board(teamId: $teamId) { teamId asOf columns { status tasks { ${TASK_FIELDS} } } }
  }`;
  const BOARD_CHANGED = `subscription HuddleBoardChanged($teamId: ID!) {
    boardChanged(teamId: $teamId) { teamId change task { ${TASK_FIELDS} } }
  }`;

  const $ = (id) => document.getElementById(id);
  const graphqlUrl = new URL("../graphql", location.href);
  const wsUrl = new URL(graphqlUrl);
  wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const teamId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

  const state = {
    token: null,
    generation: 0, // bumped on every sign-in/out: late answers of an old session are dropped
    members: new Map(),
    tasks: new Map(), // id -> {task, seq}; seq keeps the server's order for equal due dates
    nextSeq: 0,
    fetching: null,
    fetchAgain: false,
    buffered: null, // events received while a refetch is in flight, replayed over it
    client: null,
    unsubscribe: null,
    pongTimer: 0,
    resubscribeTimer: 0,
    resubscribeFailures: 0,
    retryFetchTimer: 0,
  };

  class ApiError extends Error {
    constructor(errors) {
      super("GraphQL errors");
      const codes = errors.map((e) => (e && e.extensions && e.extensions.code) || "ERROR");
      this.code = ["UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND"].find((c) => codes.includes(c));
      this.code = this.code || codes[0];
      this.detail = errors.map((e) => (e && e.message) || "").join(" ");
    }
  }

  // --- token ---------------------------------------------------------------------------

  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (!params.has("token")) return null;
    // The token must not linger in the address bar, history or a bookmark.
    history.replaceState(history.state, "", location.pathname + location.search);
    return (params.get("token") || "").trim() || null;
  }

  function tokenFromPaste(text) {
    let token = text.trim();
    const inLink = token.match(/[#&]token=([^&\s]+)/);
    if (inLink) token = new URLSearchParams(`token=${inLink[1]}`).get("token") || "";
    return token.replace(/^Bearer\s+/i, "");
  }

  function signIn(token) {
    signOutQuietly();
    state.token = token;
    state.generation += 1;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("sign-in").hidden = true;
    $("sign-out").hidden = false;
    hideMessage();
    setConnection("connecting");
    refresh();
    subscribe();
  }

  function signOutQuietly() {
    state.generation += 1;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.resubscribeTimer);
    clearTimeout(state.retryFetchTimer);
    state.resubscribeTimer = state.retryFetchTimer = 0;
    dropClient();
    // Nothing the viewer may no longer see stays on the screen.
    state.tasks.clear();
    state.members.clear();
    $("team-name").textContent = "Team board";
    $("updated-at").textContent = "—";
    render();
  }

  function signOut(title, text) {
    signOutQuietly();
    setConnection("signed-out");
    $("sign-out").hidden = true;
    $("board").hidden = true;
    $("cancelled").hidden = true;
    $("sign-in").hidden = false;
    if (title) showMessage(title, text);
    $("token-input").focus();
  }

  function refused(error) {
    if (error.code === "UNAUTHENTICATED") {
      signOut(
        "Your sign-in is not valid",
        "The token was refused (it may have expired). Paste a new one to show the board.",
      );
    } else {
      signOut(
        "This board is not available to you",
        "Only members of this team can see its board, and this token is not a member's. " +
          "Paste a team member's token. " +
          error.detail,
      );
    }
  }

  // The server closes a socket whose token it refuses (4403, at connection_init) or whose
  // token has expired (4401): retrying with the same token cannot help, so ask for a new one.
  const SIGN_IN_CLOSE_CODES = [4401, 4403];
  const signInClosed = (event) =>
    Boolean(event) && typeof event.code === "number" && SIGN_IN_CLOSE_CODES.includes(event.code);

  const isRefusal = (error) =>
    error instanceof ApiError && ["UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND"].includes(error.code);

  // --- fetching the whole board ----------------------------------------------------------

  async function fetchBoard(token) {
    const response = await fetch(graphqlUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query: BOARD_QUERY, variables: { teamId } }),
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      throw new Error(`The API answered ${response.status} without a GraphQL response.`);
    }
    if (body.errors && body.errors.length) throw new ApiError(body.errors);
    if (!response.ok || !body.data) throw new Error(`The API answered ${response.status}.`);
    if (!body.data.team) throw new ApiError([{ extensions: { code: "NOT_FOUND" } }]);
    return body.data;
  }

  function refresh() {
    if (!state.token) return Promise.resolve();
    if (state.fetching) {
      state.fetchAgain = true;
      return state.fetching;
    }
    const generation = state.generation;
    state.buffered = [];
    state.fetching = (async () => {
      try {
        const data = await fetchBoard(state.token);
        if (generation !== state.generation) return;
        hideMessage();
        showBoard();
        applySnapshot(data);
        for (const event of state.buffered) applyEvent(event);
        render();
        markUpdated();
      } catch (error) {
        if (generation !== state.generation) return;
        if (isRefusal(error)) return refused(error);
        if (!state.tasks.size) {
          showMessage("Cannot reach carecoord", "The board will load as soon as it answers.");
        }
        if (!navigator.onLine) setConnection("offline");
        clearTimeout(state.retryFetchTimer);
        state.retryFetchTimer = setTimeout(refresh, RETRY_FETCH_MS);
      } finally {
        state.fetching = null;
        state.buffered = null;
        if (state.fetchAgain) {
          state.fetchAgain = false;
          refresh();
        }
      }
    })();
    return state.fetching;
  }

  function applySnapshot(data) {
    $("team-name").textContent = data.team.name;
    state.members = new Map(data.team.members.map((m) => [m.userId, m.name]));
    state.tasks.clear();
    state.nextSeq = 0;
    for (const column of data.board.columns) {
      for (const task of column.tasks) state.tasks.set(task.id, { task, seq: state.nextSeq++ });
    }
  }

  // --- live updates ----------------------------------------------------------------------

  function applyEvent(event) {
    const task = event.task;
    const known = state.tasks.get(task.id);
    // A refetch that started before this change must not undo it, nor an old event.
    if (known && Date.parse(task.updatedAt) < Date.parse(known.task.updatedAt)) return;
    if (event.change === "REMOVED") state.tasks.delete(task.id);
    else state.tasks.set(task.id, { task, seq: known ? known.seq : state.nextSeq++ });
  }

  function onEvent(event) {
    if (event.teamId !== teamId) return;
    applyEvent(event);
    if (state.buffered) state.buffered.push(event);
    render();
    markUpdated();
  }

  function backoff(retries) {
    const ms = Math.min(30_000, 1_000 * 2 ** retries) * (0.5 + Math.random() / 2);
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function subscribe() {
    const generation = state.generation;
    // A replaced client's late events (its socket closing) must not touch the page.
    const current = () => generation === state.generation && state.client === client;
    const client = graphqlWs.createClient({
      url: wsUrl.href,
      connectionParams: () => ({ Authorization: `Bearer ${state.token}` }),
      retryAttempts: Infinity,
      // A dropped connection is worth another try; a refused or expired sign-in is not.
      shouldRetry: (event) => !signInClosed(event),
      retryWait: backoff,
      keepAlive: KEEPALIVE_MS,
      on: {
        connecting: (isRetry) => {
          if (current()) setConnection(isRetry ? "reconnecting" : "connecting");
        },
        connected: () => {
          if (!current()) return;
          state.resubscribeFailures = 0;
          setConnection("live");
          // Whatever changed while disconnected is in the refetch, not in the stream.
          setTimeout(() => current() && refresh(), SETTLE_MS);
        },
        closed: () => {
          if (!current()) return;
          clearTimeout(state.pongTimer);
          setConnection("reconnecting");
        },
        ping: (received) => {
          if (received || !current()) return;
          // A socket that stops answering (a sleeping laptop, a dropped NAT entry) is cut.
          clearTimeout(state.pongTimer);
          state.pongTimer = setTimeout(() => client.terminate(), PONG_TIMEOUT_MS);
        },
        pong: (received) => received && clearTimeout(state.pongTimer),
      },
    });
    state.client = client;
    state.unsubscribe = client.subscribe(
      { query: BOARD_CHANGED, variables: { teamId } },
      {
        next: (result) => {
          if (!current()) return;
          if (result.errors && result.errors.length) return ended(new ApiError(result.errors));
          if (result.data && result.data.boardChanged) onEvent(result.data.boardChanged);
        },
        error: (error) => {
          if (!current()) return;
          if (signInClosed(error)) return refused({ code: "UNAUTHENTICATED" });
          ended(Array.isArray(error) ? new ApiError(error) : error);
        },
        complete: () => current() && ended(null),
      },
    );
  }

  function dropClient() {
    clearTimeout(state.pongTimer);
    if (state.unsubscribe) state.unsubscribe();
    if (state.client) state.client.dispose();
    state.client = state.unsubscribe = null;
  }

  // The server ended the subscription, or the client gave up (a close code it deems
  // fatal): start over with a fresh client after a pause.
  function ended(error) {
    if (error && isRefusal(error)) return refused(error);
    if (state.resubscribeTimer || !state.token) return;
    dropClient();
    setConnection(navigator.onLine ? "reconnecting" : "offline");
    const delay = Math.min(60_000, 2_000 * 2 ** state.resubscribeFailures++);
    state.resubscribeTimer = setTimeout(() => {
      state.resubscribeTimer = 0;
      if (state.token) subscribe();
    }, delay);
  }

  // --- rendering -------------------------------------------------------------------------

  function setConnection(name) {
    if ((name === "connecting" || name === "reconnecting") && !navigator.onLine) {
      name = "offline";
    }
    const element = $("connection");
    element.dataset.state = name;
    $("connection-text").textContent = CONNECTION[name];
  }

  function markUpdated() {
    const now = new Date();
    const time = $("updated-at");
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], {
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
  }

  function showMessage(title, text) {
    $("message-title").textContent = title;
    $("message-text").textContent = text || "";
    $("message").hidden = false;
  }

  function hideMessage() {
    $("message").hidden = true;
  }

  function showBoard() {
    $("board").hidden = false;
    $("sign-in").hidden = true;
  }

  const localToday = () => {
    const d = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  };

  function formatDue(iso) {
    if (iso === localToday()) return "Today";
    const [y, m, d] = iso.split("-").map(Number);
    const date = new Date(Date.UTC(y, m - 1, d));
    const options = { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" };
    if (y !== new Date().getFullYear()) options.year = "numeric";
    return date.toLocaleDateString([], options);
  }

  // Drawn, not emoji: wall-screen computers often have no emoji font.
  const ICONS = {
    overdue: [
      ["path", { d: "M12 2.5 22.5 21h-21Z", fill: "none", "stroke-linejoin": "round" }],
      ["path", { d: "M12 9.5v5.5M12 17.5v1" }],
    ],
    blocked: [
      ["circle", { cx: "12", cy: "12", r: "9.5", fill: "none" }],
      ["path", { d: "M6.5 12h11" }],
    ],
    person: [
      ["circle", { cx: "12", cy: "7.5", r: "4.5", fill: "currentColor", stroke: "none" }],
      ["path", { d: "M3.5 21.5a8.5 7 0 0 1 17 0Z", fill: "currentColor", stroke: "none" }],
    ],
    urgent: [
      ["circle", { cx: "12", cy: "12", r: "9.5", fill: "none" }],
      ["path", { d: "M12 6.5v7M12 16.5v1" }],
    ],
    escalated: [
      ["path", { d: "M12 20V5M5.5 11.5 12 5l6.5 6.5", fill: "none", "stroke-linejoin": "round" }],
    ],
    signal: [
      ["path", { d: "M2.5 12h4l2.5-6 4 12 2.5-6h6", fill: "none", "stroke-linejoin": "round" }],
    ],
    restricted: [
      ["path", { d: "M7.5 10.5V7.5a4.5 4.5 0 0 1 9 0v3", fill: "none" }],
      ["rect", { x: "4", y: "10.5", width: "16", height: "11", rx: "2", fill: "currentColor" }],
    ],
  };

  function icon(kind) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "icon");
    for (const [tag, attributes] of ICONS[kind]) {
      const shape = document.createElementNS(ns, tag);
      for (const [name, value] of Object.entries(attributes)) shape.setAttribute(name, value);
      svg.append(shape);
    }
    return svg;
  }

  function flag(kind, text) {
    const span = document.createElement("span");
    span.className = `flag flag-${kind}`;
    span.append(icon(kind), text);
    return span;
  }

  const signals = (count) => (count === 1 ? "1 signal" : `${count} signals`);

  function renderCard(task) {
    const card = $("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.taskId = task.id;
    card.classList.toggle("overdue", task.overdue);
    card.classList.toggle("blocked", task.status === "BLOCKED");
    card.classList.toggle("restricted", task.redacted);
    card.classList.toggle("urgent", Boolean(task.urgent));
    card.classList.toggle("escalated", Boolean(task.escalated));
    const flags = card.querySelector(".flags");
    if (task.urgent) flags.append(flag("urgent", "Urgent"));
    if (task.escalated) flags.append(flag("escalated", "Escalated to leads"));
    if (task.signalCount > 0) flags.append(flag("signal", signals(task.signalCount)));
    if (task.overdue) flags.append(flag("overdue", "Overdue"));
    if (task.status === "BLOCKED") flags.append(flag("blocked", "Blocked"));
    if (!flags.childElementCount) flags.remove();
    const title = card.querySelector(".card-title");
    if (task.redacted) {
      // The API's placeholder title is never shown; say what it means instead.
      title.append(flag("restricted", "Restricted — consent required"));
    } else {
      title.textContent = task.title;
    }
    const reason = card.querySelector(".blocked-reason");
    if (task.status === "BLOCKED" && task.blockedReason && !task.redacted) {
      reason.textContent = `Waiting for: ${task.blockedReason}`;
      reason.hidden = false;
    }
    const assignee = task.assigneeId
      ? state.members.get(task.assigneeId) || "Not on this team"
      : "Unassigned";
    const who = card.querySelector(".assignee dd");
    who.append(icon("person"), assignee);
    who.classList.toggle("unassigned", !task.assigneeId);
    card.querySelector(".discipline dd").textContent =
      DISCIPLINES[task.discipline] || task.discipline || "Any";
    const due = task.dueDate ? formatDue(task.dueDate) : "No due date";
    card.querySelector(".due dd").textContent = task.overdue ? `${due} (overdue)` : due;
    return card;
  }

  function render() {
    const byStatus = new Map(COLUMNS.map((s) => [s, []]));
    for (const entry of state.tasks.values()) {
      const list = byStatus.get(entry.task.status);
      if (list) list.push(entry);
    }
    for (const [status, entries] of byStatus) {
      // The server's order: by due date, none last; then as it listed them.
      entries.sort(
        (a, b) =>
          (a.task.dueDate || "~").localeCompare(b.task.dueDate || "~") || a.seq - b.seq,
      );
      const column = document.querySelector(`.column[data-status="${status}"]`);
      // A long column gets the width to lay its cards out side by side, so that a wall
      // screen shows the whole board without scrolling. (CSSOM, which the CSP allows.)
      column.style.setProperty("--weight", String(Math.min(3, Math.max(1, entries.length / 5))));
      column.querySelector(".cards").replaceChildren(...entries.map((e) => renderCard(e.task)));
      const count = status === "CANCELLED" ? $("cancelled") : column;
      count.querySelector(".count").textContent = String(entries.length);
    }
    $("cancelled").hidden = !byStatus.get("CANCELLED").length || $("board").hidden;
  }

  // --- wiring ----------------------------------------------------------------------------

  function main() {
    $("sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token-input");
      const token = tokenFromPaste(input.value);
      if (!JWT.test(token)) {
        showMessage(
          "That is not a sign-in token",
          "A token is three dot-separated parts (it starts with eyJ). Paste the whole token, " +
            "or the board link that carries it.",
        );
        return;
      }
      input.value = "";
      signIn(token);
    });
    $("sign-out").addEventListener("click", () =>
      signOut("Signed out", "The token is forgotten. Paste one to show the board again."),
    );
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") refresh();
    });
    setInterval(() => document.visibilityState === "visible" && refresh(), REFRESH_MS);
    addEventListener("offline", () => state.token && setConnection("offline"));
    addEventListener("online", () => {
      if (!state.token) return;
      // A socket from before the outage cannot be trusted, and the back-off need not run
      // its course: connect afresh now (the connection refetches the board).
      clearTimeout(state.resubscribeTimer);
      state.resubscribeTimer = 0;
      dropClient();
      setConnection("reconnecting");
      subscribe();
    });
    // A board link pasted into the address bar of an open board changes only the fragment.
    addEventListener("hashchange", () => {
      const token = tokenFromFragment();
      if (token) signIn(token);
    });

    if (!TEAM_ID.test(teamId)) {
      signOut("No such team", "The address does not name a team. Open the link you were given.");
      return;
    }
    const token = tokenFromFragment() || sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token);
    else signOut();
  }

  main();
})();
