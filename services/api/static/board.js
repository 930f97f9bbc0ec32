/* carecoord's live huddle board: a team's tasks by status beside the huddle's agenda, fitted
 * to a wall screen. The board is read once, with the event-store position it reflects; the
 * page then subscribes to the changes after that position (graphql-transport-ws, the
 * vendored graphql-ws client) and, on every reconnection, resumes after the last position
 * it received: the server replays what the page missed. Only a refused resume (the server
 * no longer holds that position) or a new sign-in reads the board again; nothing polls.
 * All text from the API is set with textContent; nothing is logged to the console (task
 * titles and patient names are PHI). */
(function () {
  "use strict";

  const TOKEN_KEY = "carecoord.board.token";
  const TEAM_ID = /^[A-Za-z0-9_-]{1,128}$/;
  const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
  // A wall screen (?kiosk=1): no sign-out, no controls, and the token kept across restarts
  // of the screen's browser (localStorage) instead of for this tab only.
  const KIOSK = new URLSearchParams(location.search).get("kiosk") === "1";
  const store = KIOSK ? localStorage : sessionStorage;
  // Reviews due, goals at risk and readings overdue are not on the board's stream: the
  // agenda is read again this often (each read is one access record per patient on it).
  const AGENDA_MS = 60 * 60_000;
  const KEEPALIVE_MS = 15_000;
  const PONG_TIMEOUT_MS = 5_000;
  const RETRY_FETCH_MS = 10_000;
  const COLUMNS = ["TODO", "IN_PROGRESS", "BLOCKED", "DONE", "CANCELLED"];
  const OPEN = ["TODO", "IN_PROGRESS", "BLOCKED"];
  const RESTRICTED_TEXT = "Restricted — consent required";
  const API_RESTRICTED = "[restricted]";
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
    "patientId blockedReason source urgent escalated signalCount " +
    "assignee { userId name } patient { id name }";
  const BOARD_QUERY = `query HuddleBoard($teamId: ID!) {
    me { userId name }
    team(id: $teamId) { id name }
    board(teamId: $teamId) { teamId asOf position columns { status tasks { ${TASK_FIELDS} } } }
  }`;
  const AGENDA_QUERY = `query HuddleAgendaPanel($teamId: ID!) {
    huddleAgenda(teamId: $teamId) {
      plansDueForReview { id patientId title nextReviewDate }
      goalsAtRisk { id description }
      readingsOverdue { id redacted measure { name } }
    }
  }`;
  const BOARD_CHANGED = `subscription HuddleBoardChanged($teamId: ID!, $after: Position) {
    boardChanged(teamId: $teamId, after: $after) {
      teamId change position task { ${TASK_FIELDS} }
    }
  }`;

  const $ = (id) => document.getElementById(id);
  const graphqlUrl = new URL("../graphql", location.href);
  const wsUrl = new URL(graphqlUrl);
  wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const teamId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

  const state = {
    token: null,
    generation: 0, // bumped on every sign-in/out: late answers of an old session are dropped
    tasks: new Map(), // id -> {task, seq}; seq keeps the server's order for equal due dates
    nextSeq: 0,
    position: null, // the event-store position the page reflects: where a resume starts
    agenda: null,
    fetching: null,
    client: null,
    unsubscribe: null,
    pongTimer: 0,
    resubscribeTimer: 0,
    resubscribeFailures: 0,
    refetches: 0, // board reads in a row that a refused resume asked for
    retryFetchTimer: 0,
    agendaTimer: 0,
    midnightTimer: 0,
  };

  class ApiError extends Error {
    constructor(errors) {
      super("GraphQL errors");
      const codes = errors.map((e) => (e && e.extensions && e.extensions.code) || "ERROR");
      this.code = ["UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND"].find((c) => codes.includes(c));
      this.code = this.code || codes[0];
      // A resume from a position the server no longer holds: read the board again.
      this.refetch = errors.some(
        (e) => e && e.extensions && e.extensions.code === "CONFLICT" && e.extensions.refetch,
      );
      this.detail = errors.map((e) => (e && e.message) || "").join(" ");
    }
  }

  // --- token ---------------------------------------------------------------------------

  // The token comes in the URL fragment (which browsers never send, so it reaches no server
  // log) or is pasted; it is never put in the query string.
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
    store.setItem(TOKEN_KEY, token);
    $("sign-in").hidden = true;
    $("sign-out").hidden = KIOSK;
    hideMessage();
    setConnection("connecting");
    start();
    clearInterval(state.agendaTimer);
    state.agendaTimer = setInterval(() => refreshAgenda(), AGENDA_MS);
  }

  function signOutQuietly() {
    state.generation += 1;
    state.token = null;
    store.removeItem(TOKEN_KEY);
    clearTimeout(state.resubscribeTimer);
    clearTimeout(state.retryFetchTimer);
    clearInterval(state.agendaTimer);
    state.resubscribeTimer = state.retryFetchTimer = state.agendaTimer = 0;
    state.refetches = 0;
    dropClient();
    // Nothing the viewer may no longer see stays on the screen.
    state.tasks.clear();
    state.position = null;
    state.agenda = null;
    $("team-name").textContent = "Team board";
    $("viewer-name").textContent = "";
    $("viewer").hidden = true;
    $("updated-at").textContent = "—";
    render();
  }

  function signOut(title, text) {
    signOutQuietly();
    setConnection("signed-out");
    $("sign-out").hidden = true;
    $("layout").hidden = true;
    $("cancelled").hidden = true;
    $("sign-in").hidden = false;
    if (title) showMessage(title, text);
    $("token-input").focus();
  }

  function refused(error) {
    const again = KIOSK ? " Ask a team lead to sign this screen in again." : "";
    if (error.code === "UNAUTHENTICATED") {
      signOut(
        "The sign-in is not valid",
        "The token was refused (it may have expired). Paste a new one to show the board." +
          again,
      );
    } else {
      signOut(
        "This board is not available to you",
        "Only members of this team can see its board, and this token is not a member's. " +
          "Paste a team member's token." +
          again +
          " " +
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

  // --- reading the board and the agenda ----------------------------------------------------

  async function post(token, query) {
    const response = await fetch(graphqlUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query, variables: { teamId } }),
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
    return body.data;
  }

  async function fetchBoard(token) {
    const data = await post(token, BOARD_QUERY);
    if (!data.team) throw new ApiError([{ extensions: { code: "NOT_FOUND" } }]);
    return data;
  }

  // Reads the board (and the agenda), then subscribes after the board's position. Called on
  // sign-in and when the server refuses a resume; never on a mere reconnection.
  function start() {
    if (!state.token || state.fetching) return;
    const generation = state.generation;
    dropClient();
    clearTimeout(state.retryFetchTimer);
    state.fetching = (async () => {
      try {
        const data = await fetchBoard(state.token);
        if (generation !== state.generation) return;
        hideMessage();
        showBoard();
        applySnapshot(data);
        render();
        markUpdated();
        subscribe();
        refreshAgenda();
      } catch (error) {
        if (generation !== state.generation) return;
        if (isRefusal(error)) return refused(error);
        if (!state.tasks.size) {
          showMessage("Cannot reach carecoord", "The board will load as soon as it answers.");
        }
        setConnection(navigator.onLine ? "reconnecting" : "offline");
        state.retryFetchTimer = setTimeout(start, RETRY_FETCH_MS);
      } finally {
        state.fetching = null;
      }
    })();
  }

  async function refreshAgenda() {
    if (!state.token || document.visibilityState === "hidden") return;
    const generation = state.generation;
    try {
      const data = await post(state.token, AGENDA_QUERY);
      if (generation !== state.generation) return;
      state.agenda = data.huddleAgenda;
      renderAgenda();
    } catch (error) {
      if (generation !== state.generation) return;
      if (isRefusal(error)) refused(error);
      // Otherwise the last agenda stays; the next hourly read tries again.
    }
  }

  function applySnapshot(data) {
    $("team-name").textContent = data.team.name;
    $("viewer-name").textContent = data.me.name;
    $("viewer").hidden = false;
    state.tasks.clear();
    state.nextSeq = 0;
    for (const column of data.board.columns) {
      for (const task of column.tasks) state.tasks.set(task.id, { task, seq: state.nextSeq++ });
    }
    state.position = data.board.position;
  }

  // --- live updates ----------------------------------------------------------------------

  function applyEvent(event) {
    const task = event.task;
    const known = state.tasks.get(task.id);
    if (event.change === "REMOVED") state.tasks.delete(task.id);
    else state.tasks.set(task.id, { task, seq: known ? known.seq : state.nextSeq++ });
  }

  function onEvent(event) {
    if (event.teamId !== teamId) return;
    applyEvent(event);
    state.refetches = 0;
    // Where a resume starts: the last position received (a change shown on several cards
    // carries its own position on its last card only).
    state.position = event.position;
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
    // graphql-ws sends this same payload again on every reconnection (serialized then), so
    // keeping `after` current here makes each automatic resubscription resume where the
    // page left off.
    const payload = { query: BOARD_CHANGED, variables: { teamId, after: state.position } };
    const client = graphqlWs.createClient({
      url: wsUrl.href,
      connectionParams: () => {
        payload.variables.after = state.position;
        return { Authorization: `Bearer ${state.token}` };
      },
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
    state.unsubscribe = client.subscribe(payload, {
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
    });
  }

  function dropClient() {
    clearTimeout(state.pongTimer);
    if (state.unsubscribe) state.unsubscribe();
    if (state.client) state.client.dispose();
    state.client = state.unsubscribe = null;
  }

  // The server ended the subscription, or the client gave up (a close code it deems
  // fatal): resume after the last position with a fresh client after a pause, or read the
  // board again if the server no longer holds that position.
  function ended(error) {
    if (error && isRefusal(error)) return refused(error);
    if (!state.token) return;
    dropClient();
    if (error instanceof ApiError && error.refetch) {
      clearTimeout(state.resubscribeTimer);
      setConnection("reconnecting");
      // Read again at once; but a server that refuses every resume must not get a board
      // read (an access record per patient) in a tight loop: back off from the second.
      const delay = state.refetches ? Math.min(60_000, 2_000 * 2 ** (state.refetches - 1)) : 0;
      state.refetches += 1;
      state.resubscribeTimer = setTimeout(() => {
        state.resubscribeTimer = 0;
        start();
      }, delay);
      return;
    }
    if (state.resubscribeTimer) return;
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
    $("layout").hidden = false;
    $("sign-in").hidden = true;
  }

  const localToday = () => {
    const d = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  };

  // Short, for a narrow card: "Today", a weekday within the coming week, else the date.
  function formatDue(iso) {
    if (iso === localToday()) return "Today";
    const [y, m, d] = iso.split("-").map(Number);
    const date = new Date(Date.UTC(y, m - 1, d));
    const [ty, tm, td] = localToday().split("-").map(Number);
    const days = (date - Date.UTC(ty, tm - 1, td)) / 86_400_000;
    if (days > 0 && days < 7) {
      return date.toLocaleDateString([], { weekday: "short", timeZone: "UTC" });
    }
    const options = { day: "numeric", month: "short", timeZone: "UTC" };
    if (y !== ty) options.year = "numeric";
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
    patient: [
      ["rect", { x: "2.5", y: "5", width: "19", height: "14", rx: "2", fill: "none" }],
      ["circle", { cx: "8.5", cy: "11", r: "2.3", fill: "currentColor", stroke: "none" }],
      ["path", { d: "M14 10h4.5M14 14h4.5M5.5 16.5h6" }],
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

  function flag(kind, text) {
    const span = document.createElement("span");
    span.className = `flag flag-${kind}`;
    span.append(icon(kind), text);
    return span;
  }

  const signals = (count) => (count === 1 ? "1 signal" : `${count} signals`);

  // Blocked reasons are often written as "Waiting for insurer reply": said once, not twice.
  function waitingFor(reason) {
    const text = reason.trim();
    return /^waiting\b/i.test(text) ? text : `Waiting for: ${text}`;
  }

  // The patient a card is about, unless the card is redacted: a restricted card does not
  // say whose it is on a screen the whole room can read.
  const patientName = (task) => (!task.redacted && task.patient && task.patient.name) || null;

  // Overdue as the server decides it (services/common/dates.py earliest_today): the due
  // date has passed everywhere on Earth, that is in UTC-12. Worked out here too, because
  // the server's notice of a task turning overdue is not in the change log a resume
  // replays: a screen away at that moment would never hear of it.
  const earliestToday = () => new Date(Date.now() - 12 * 3600_000).toISOString().slice(0, 10);
  const isOverdue = (task) =>
    Boolean(task.overdue) ||
    (OPEN.includes(task.status) && Boolean(task.dueDate) && task.dueDate < earliestToday());

  function renderCard(task) {
    const card = $("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.taskId = task.id;
    const overdue = isOverdue(task);
    card.classList.toggle("overdue", overdue);
    card.classList.toggle("blocked", task.status === "BLOCKED");
    card.classList.toggle("restricted", task.redacted);
    card.classList.toggle("urgent", Boolean(task.urgent));
    card.classList.toggle("escalated", Boolean(task.escalated));
    const flags = card.querySelector(".flags");
    if (task.urgent) flags.append(flag("urgent", "Urgent"));
    if (task.escalated) flags.append(flag("escalated", "Escalated to leads"));
    if (task.signalCount > 0) flags.append(flag("signal", signals(task.signalCount)));
    if (overdue) flags.append(flag("overdue", "Overdue"));
    if (task.status === "BLOCKED") flags.append(flag("blocked", "Blocked"));
    if (!flags.childElementCount) flags.remove();
    const name = patientName(task);
    if (name) {
      const patient = card.querySelector(".patient");
      patient.append(icon("patient"), name);
      patient.hidden = false;
    }

    const title = card.querySelector(".card-title");
    if (task.redacted) {
      // The API's placeholder title is never shown; say what it means instead.
      title.append(flag("restricted", RESTRICTED_TEXT));
    } else {
      title.textContent = task.title;
      title.title = task.title; // the whole title, where the card cuts it short
    }
    const reason = card.querySelector(".blocked-reason");
    if (task.status === "BLOCKED" && task.blockedReason && !task.redacted) {
      reason.textContent = reason.title = waitingFor(task.blockedReason);
      reason.hidden = false;
    }
    const assignee = task.assigneeId
      ? (task.assignee && task.assignee.name) || "Not on this team"
      : "Unassigned";
    const who = card.querySelector(".assignee dd");
    who.append(icon("person"), assignee);
    who.classList.toggle("unassigned", !task.assigneeId);
    // On a narrow card the assignee matters more; the discipline says who should pick up
    // an unassigned task.
    const discipline = card.querySelector(".discipline");
    if (task.assigneeId) discipline.remove();
    else discipline.querySelector("dd").textContent =
      DISCIPLINES[task.discipline] || task.discipline || "Any discipline";
    const due = task.dueDate ? formatDue(task.dueDate) : "No due date";
    card.querySelector(".due dd").textContent = due;
    // Beside the Overdue flag, the date alone says when it was due.
    if (overdue || !task.dueDate) card.querySelector(".due dt").classList.add("sr-only");
    return card;
  }

  const byDue = (a, b) =>
    (a.task.dueDate || "~").localeCompare(b.task.dueDate || "~") || a.seq - b.seq;

  // Closed cards the board shows (its closedDays, read with the default): one closed
  // longer ago goes when a day turns, as a fresh read would leave it out. A consent change
  // re-decides only cards a board read may show, so none lingers past that.
  const CLOSED_DAYS = 14;
  const CLOSED = new Set(["DONE", "CANCELLED"]);

  function dropClosedLongAgo() {
    const since = Date.now() - CLOSED_DAYS * 86_400_000;
    for (const [id, entry] of state.tasks) {
      if (CLOSED.has(entry.task.status) && Date.parse(entry.task.updatedAt) < since) {
        state.tasks.delete(id);
      }
    }
  }

  function render() {
    dropClosedLongAgo();
    const byStatus = new Map(COLUMNS.map((s) => [s, []]));
    for (const entry of state.tasks.values()) {
      const list = byStatus.get(entry.task.status);
      if (list) list.push(entry);
    }
    for (const [status, entries] of byStatus) {
      // The server's order: by due date, none last; then as it listed them.
      entries.sort(byDue);
      const column = document.querySelector(`.column[data-status="${status}"]`);
      column.querySelector(".cards").replaceChildren(...entries.map((e) => renderCard(e.task)));
      const count = status === "CANCELLED" ? $("cancelled") : column;
      count.querySelector(".count").textContent = String(entries.length);
    }
    $("cancelled").hidden = KIOSK || !byStatus.get("CANCELLED").length || $("layout").hidden;
    renderAgenda();
    fit();
  }

  // --- the agenda panel --------------------------------------------------------------------

  function agendaItem(kind, text, detail) {
    const li = document.createElement("li");
    li.className = `item item-${kind}`;
    const what = document.createElement("span");
    what.className = "what";
    what.append(text);
    li.append(what);
    if (detail) {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = detail;
      li.append(who);
    }
    return li;
  }

  function taskItem(kind, task) {
    const what = task.redacted ? RESTRICTED_TEXT : task.title;
    const item = agendaItem(kind, what, patientName(task));
    item.classList.toggle("restricted", task.redacted);
    return item;
  }

  function fillPart(part, items) {
    const section = document.querySelector(`.agenda-part[data-part="${part}"]`);
    section.querySelector(".items").replaceChildren(...items);
    section.querySelector(".count").textContent = String(items.length);
    section.classList.toggle("empty", !items.length);
  }

  // Overdue, blocked and signal tasks come from the live board (so they move with it);
  // reviews due, goals at risk and readings overdue from the last agenda read.
  function renderAgenda() {
    const open = [...state.tasks.values()].filter((e) => OPEN.includes(e.task.status));
    open.sort(byDue);
    fillPart(
      "overdue",
      open.filter((e) => isOverdue(e.task)).map((e) => taskItem("overdue", e.task)),
    );
    fillPart(
      "blocked",
      open.filter((e) => e.task.status === "BLOCKED").map((e) => taskItem("blocked", e.task)),
    );
    const names = new Map();
    for (const { task } of state.tasks.values()) {
      if (patientName(task)) names.set(task.patient.id, task.patient.name);
    }
    const agenda = state.agenda || { plansDueForReview: [], goalsAtRisk: [], readingsOverdue: [] };
    fillPart(
      "reviews",
      agenda.plansDueForReview.map((plan) => {
        const due = plan.nextReviewDate ? `review ${formatDue(plan.nextReviewDate)}` : "";
        const who = names.get(plan.patientId);
        return agendaItem("review", plan.title, [who, due].filter(Boolean).join(" · "));
      }),
    );
    const signalTasks = open.filter((e) => e.task.source === "SIGNAL");
    // Urgent first, then the oldest, as the agenda orders them.
    signalTasks.sort(
      (a, b) =>
        Number(Boolean(b.task.urgent)) - Number(Boolean(a.task.urgent)) ||
        a.task.updatedAt.localeCompare(b.task.updatedAt),
    );
    const restricted = (text) => (!text || text === API_RESTRICTED ? RESTRICTED_TEXT : text);
    fillPart("signals", [
      ...signalTasks.map((e) => taskItem(e.task.urgent ? "urgent" : "signal", e.task)),
      ...agenda.goalsAtRisk.map((g) => agendaItem("goal", restricted(g.description), "Goal at risk")),
      ...agenda.readingsOverdue.map((m) =>
        agendaItem(
          "reading",
          m.redacted ? RESTRICTED_TEXT : restricted(m.measure && m.measure.name),
          "Reading overdue",
        ),
      ),
    ]);
  }

  // --- fitting a wall screen ---------------------------------------------------------------

  // Each column gets as many card tracks side by side as its cards need to fit its height
  // (and the width in proportion), the most crowded column first, while every track stays
  // a readable card's width; what still does not fit scrolls inside its column. Measured,
  // not estimated: a track is added only to a column whose cards overflow it. On a narrow
  // window the columns stack and nothing is fitted.
  const MIN_TRACK_REM = 12.5;

  function fit() {
    const board = $("board");
    if ($("layout").hidden) return;
    const columns = [...board.querySelectorAll(".column")];
    const lists = columns.map((c) => c.querySelector(".cards"));
    const counts = lists.map((l) => l.childElementCount);
    // An empty column keeps half a track's width: room for its heading and "No tasks".
    const weights = counts.map((n) => (n ? 1 : 0.5));
    const tracks = columns.map(() => 1);
    const apply = () =>
      columns.forEach((column, i) => {
        // CSSOM custom properties, which the CSP allows (no inline style attribute).
        column.style.setProperty("--weight", String(weights[i]));
        column.style.setProperty("--tracks", String(tracks[i]));
      });
    apply();
    if (getComputedStyle(board).flexDirection === "column") return;
    const rem = parseFloat(getComputedStyle(document.documentElement).fontSize);
    const room = board.clientWidth / (MIN_TRACK_REM * rem);
    let spare = room - weights.reduce((a, b) => a + b, 0);
    while (spare >= 1) {
      let most = -1;
      lists.forEach((list, i) => {
        const overflows = list.scrollHeight > list.clientHeight + 1 && tracks[i] < counts[i];
        if (overflows && (most < 0 || counts[i] / tracks[i] > counts[most] / tracks[most])) {
          most = i;
        }
      });
      if (most < 0) break;
      tracks[most] += 1;
      weights[most] += 1;
      spare -= 1;
      apply();
    }
  }

  // Drawn again (no read) when a day turns: at local midnight "Today" on the cards becomes
  // a weekday, and at noon UTC (midnight in UTC-12) yesterday's due dates become overdue.
  function atMidnight() {
    clearTimeout(state.midnightTimer);
    const now = new Date();
    const local = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
    const utcNoon = new Date(now);
    utcNoon.setUTCHours(12, 0, 0, 0);
    if (utcNoon <= now) utcNoon.setUTCDate(utcNoon.getUTCDate() + 1);
    const next = Math.min(local.getTime(), utcNoon.getTime()) + 1_000;
    state.midnightTimer = setTimeout(() => {
      render();
      atMidnight();
    }, next - now.getTime());
  }

  // --- wiring ----------------------------------------------------------------------------

  function main() {
    document.body.classList.toggle("kiosk", KIOSK);
    if (KIOSK) {
      $("token-hint").textContent =
        "This screen keeps the token until it expires or is refused; open the board link " +
        "again to replace it.";
    }
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
    if (!KIOSK) {
      $("sign-out").addEventListener("click", () => {
        // A wall screen's token too (kept in localStorage): opening the board without
        // ?kiosk=1 and signing out is how a screen, or a browser that opened a kiosk link
        // by mistake, is signed out.
        localStorage.removeItem(TOKEN_KEY);
        signOut("Signed out", "The token is forgotten. Paste one to show the board again.");
      });
    }
    addEventListener("resize", () => fit());
    addEventListener("offline", () => state.token && setConnection("offline"));
    addEventListener("online", () => {
      if (!state.token) return;
      // A socket from before the outage cannot be trusted, and the back-off need not run
      // its course: connect afresh now, resuming after the last position received.
      clearTimeout(state.resubscribeTimer);
      state.resubscribeTimer = 0;
      if (state.fetching) return;
      if (state.position === null) return start();
      dropClient();
      setConnection("reconnecting");
      subscribe();
    });
    // A board link pasted into the address bar of an open board changes only the fragment.
    addEventListener("hashchange", () => {
      const token = tokenFromFragment();
      if (token) signIn(token);
    });
    atMidnight();

    if (!TEAM_ID.test(teamId)) {
      signOut("No such team", "The address does not name a team. Open the link you were given.");
      return;
    }
    const token = tokenFromFragment() || store.getItem(TOKEN_KEY);
    if (token) signIn(token);
    else signOut();
  }

  main();
})();
