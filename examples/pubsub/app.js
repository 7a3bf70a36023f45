// The tempest pub/sub example: an EventSource on /sub/chat and a WebSocket on /ws/chat,
// both on the host that served this page. Plain JavaScript, no build step.
//
// - every Server-Sent Event of channel "chat" is appended to #messages (its data);
// - every WebSocket text frame is appended to #ws-messages as received: published
//   messages arrive as the JSON list that was published (["hello"]), a worker's answer to
//   this socket as its text ("echo: hello");
// - the form sends the input's text on the WebSocket (it becomes a `ws` job);
// - document.body.dataset.ready is "yes" once both are open (tests wait for it).
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
}());
