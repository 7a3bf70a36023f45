// The tempest pub/sub example: an EventSource on /sub/chat and a WebSocket on /ws/chat,
// both on the host that served this page. Plain JavaScript, no build step.
//
// - every Server-Sent Event of channel "chat" is appended to #messages (its data);
// - every WebSocket text frame is appended to #ws-messages as received: published
//   messages arrive as the JSON list that was published (["hello"]), a worker's answer to
//   this socket as its text ("echo: hello");
// - the form sends the input's text on the WebSocket (it becomes a `ws` job);
// - document.body.dataset.ready is "yes" once both are open (tests wait for it);
// - the login form POSTs the name to /login (the worker grants the session user.<name>.*),
//   then an EventSource on /sub/~inbox (the session's user.<name>.inbox, a private channel)
//   appends to #inbox; "log out" POSTs /logout, after which tempestd ends that stream with
//   a "revoked" event within [pubsub] grant_check; document.body.dataset.inbox says where
//   it is: "none", "open", "revoked" or "refused" (a 403: EventSource gives up).
(function () {
  "use strict";

  var CHANNEL = "chat";
  var sseOpen = false;
  var wsOpen = false;

  function $(id) { return document.getElementById(id); }

  function append(listId, text) {
    var item = document.createElement("li");
    item.textContent = text;
    $(listId).appendChild(item);
  }

  function updateReady() {
    var ready = sseOpen && wsOpen;
    document.body.dataset.ready = ready ? "yes" : "no";
    $("status").textContent = "EventSource " + (sseOpen ? "open" : "closed") +
      ", WebSocket " + (wsOpen ? "open" : "closed");
  }

  // Server-Sent Events
  var source = new EventSource("/sub/" + encodeURIComponent(CHANNEL));
  source.addEventListener("open", function () { sseOpen = true; updateReady(); });
  source.addEventListener("message", function (event) { append("messages", event.data); });
  source.addEventListener("end", function () {  // ["$unsubscribe"] was published
    source.close();
    sseOpen = false;
    updateReady();
  });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself; "open" fires again when it is back
    sseOpen = source.readyState === EventSource.OPEN;
    updateReady();
  });

  // WebSocket, reconnected after a delay when it closes
  var socket = null;
  var retryDelay = 500;

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws/" + encodeURIComponent(CHANNEL));
    socket.addEventListener("open", function () {
      wsOpen = true;
      retryDelay = 500;
      updateReady();
    });
    socket.addEventListener("message", function (event) {
      append("ws-messages", typeof event.data === "string" ? event.data : "(binary message)");
    });
    socket.addEventListener("close", function () {
      wsOpen = false;
      updateReady();
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  $("send-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = $("text");
    if (!input.value || !socket || socket.readyState !== WebSocket.OPEN) {
      return;
    }
    socket.send(input.value);
    input.value = "";
    input.focus();
  });

  updateReady();
  connect();

  // the private inbox
  var inbox = null;

  function inboxState(state) { document.body.dataset.inbox = state; }

  function showUser(user) {
    $("who").textContent = user ? "logged in as " + user : "not logged in";
    $("logout").hidden = !user;
    $("inbox-form").hidden = !user;
    $("login-form").hidden = !!user;
  }

  function openInbox() {
    if (inbox) { inbox.close(); }
    var source = inbox = new EventSource("/sub/~inbox");
    source.addEventListener("open", function () { inboxState("open"); });
    source.addEventListener("message", function (event) { append("inbox", event.data); });
    source.addEventListener("revoked", function () {  // logged out: the session no longer allows it
      source.close();
      inboxState("revoked");
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED && document.body.dataset.inbox !== "revoked") {
        inboxState("refused");  // a 403: EventSource does not retry
      }
    });
  }

  function post(path, body) {
    return fetch(path, {method: "POST", body: body, credentials: "same-origin"}).then(function (response) {
      return response.json();
    });
  }

  var answered = false;  // a login or a logout answered: the first /whoami's answer is older news

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    post("/login", $("name").value).then(function (answer) {
      answered = true;
      if (answer.user) {
        showUser(answer.user);
        openInbox();  // with the cookie the login's answer set (a new id: it was regenerated)
      }
    });
  });

  $("logout").addEventListener("click", function () {
    post("/logout", "").then(function () { answered = true; showUser(null); });  // the stream ends by itself
  });

  $("inbox-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = $("inbox-text");
    post("/inbox", input.value).then(function () { input.value = ""; });
  });

  inboxState("none");
  fetch("/whoami", {credentials: "same-origin"}).then(function (response) {
    return response.json();
  }).then(function (answer) {
    document.body.dataset.whoami = "answered";
    if (answered) { return; }
    showUser(answer.user);
    if (answer.user) { openInbox(); }
  });
}());
