// HER2Radiomics reader station, in the browser: reconnect by itself, say so, tell the station
// when the page is hidden or left (it then autosaves), and step aside when the station is
// opened in another tab. Loaded once per page by trame after the first connection (window.trame
// exists then). Plain DOM outside the Vue app, so it survives trame replacing its page with
// "Connection closed" while the station restarts.
(function () {
  if (window.__h2r) return;
  const h2r = (window.__h2r = { events: [], attempts: 0 });
  const log = (e) => h2r.events.push([Date.now(), e]);

  const banner = document.createElement("div");
  banner.id = "h2r-banner";
  banner.setAttribute("role", "status");
  banner.style.cssText =
    "position:fixed;top:0;left:50%;transform:translateX(-50%);z-index:6000;" +
    "padding:8px 16px;margin-top:4px;border-radius:4px;background:#fff3cd;color:#222;" +
    "font:15px sans-serif;box-shadow:0 2px 6px rgba(0,0,0,.4);display:none";
  document.body.appendChild(banner);
  const show = (t) => { banner.textContent = t; banner.style.display = "block"; };
  const hide = () => { banner.style.display = "none"; };

  let retry = null, everConnected = false, takenOver = false;

  // the station -> this tab only (gate.py's take-over)
  window.trame.refs.h2r = {
    takenOver(msg) { takenOver = true; log("taken-over"); show(msg + " This tab is closed."); },
  };

  function startRetry() {
    if (retry || takenOver) return;
    // every second, for as long as it takes: a restarted station needs 5-30 s to load Slicer
    retry = setInterval(() => {
      h2r.attempts++;
      window.trame.connect().catch(() => {});
    }, 1000);
  }

  window.trame.addConnectListener(async () => {   // after every successful (re)connect
    log("connected");
    if (retry) { clearInterval(retry); retry = null; }
    const client = window.trame.client;            // a new client object after a reconnect
    client.onConnectionClose(() => {
      log("closed");
      if (takenOver) return;
      show("Connection to the station lost: reconnecting\u2026 (your contour was autosaved)");
      startRetry();
    });
    if (everConnected) {
      let msg = "Reconnected.";
      try { msg = "Reconnected: " + (await window.trame.trigger("h2r_reconnected")) + "."; }
      catch (e) {}
      show(msg);
      setTimeout(hide, 8000);
    } else {
      hide();
    }
    everConnected = true;
  });

  const hidden = (why) => {
    log(why);
    window.trame.trigger("h2r_hidden", [why]).catch(() => {});
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") hidden("visibilitychange");
    else window.trame.trigger("h2r_visible").catch(() => {});
  });
  // a closing tab cannot send on the socket any more (trame closes it first): the station
  // autosaves when the socket closes; this beacon says so earlier where the browser allows
  window.addEventListener("pagehide", () => {
    try { navigator.sendBeacon("/h2r/beacon", "pagehide"); } catch (e) {}
  });
})();
