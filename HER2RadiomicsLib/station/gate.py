"""Who may talk to a station process, and what they may send it.

Every station process (one reader, or the coordinator) admits one identity. The gate works on
the HTTP layer, before wslink sees anything:

* **Sign-in.** The link ``/?secret=<token>`` is checked once, answered with a session cookie
  (HttpOnly, SameSite=Strict, one name per study and station: cookies are not port-scoped) and
  a same-origin redirect to ``/``: reload, bookmarks and a restarted process keep the reader
  signed in, and the token leaves the address bar and the back button. ``/login`` takes the
  token in a form instead, so that it is in no URL at all (for shared computers: the browser's
  history database keeps a link as it was opened). The cookie value is an HMAC of the role,
  the reader, the token's hash and the issue time, keyed by the study's session key (a file
  only the station reads), so it survives restarts and dies with a re-issued token; the server
  enforces its age (:data:`SESSION_MAX_AGE_S`).
* **The websocket** (``/ws``) is refused (403) without a valid cookie or from another origin
  (a page on another local port is the same site), so no unauthenticated socket ever reaches
  wslink: nothing it would buffer or log.
* **After sign-in** messages are capped (:data:`MAX_MESSAGE_BYTES`, at most
  :data:`MAX_PENDING_MESSAGES` partial ones: wslink's own limit is 4 GiB), the state a browser
  may change is the state the server defined (no ``trame__*`` keys), each value is validated
  by the station's rules (a brush of 1e6 mm is clamped, not allocated), the render size is
  capped, and wslink's ``application.exit`` RPC is gone.
* **One tab per station**: the newest tab takes over; the older one is told so and closed (two
  tabs would otherwise share one render window, each resizing the other's).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from pathlib import Path

# aiohttp, wslink and trame_server are imported inside the functions that install the gate:
# they come with the optional [station] extra, and the signing helpers here serve without it

log = logging.getLogger(__name__)

#: the study's session key (HMAC key of the cookies), mode 600, beside study.json
SESSION_KEY_FILE = ".session_key"
#: how long a sign-in lasts (s): a reader study runs for days, a link is opened once
SESSION_MAX_AGE_S = 14 * 24 * 3600
#: largest message a signed-in browser may send (bytes): a stroke or a state change is a few
#: kB; wslink itself would accept 4 GiB
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: partial (chunked) messages a connection may have in flight (wslink keeps any number)
MAX_PENDING_MESSAGES = 32
#: largest remote view a browser may ask for (pixels): a 4K screen; a forged size would
#: otherwise make the render window as large as asked
MAX_VIEW_PIXELS = 3840 * 2160


def session_key(root) -> bytes:
    """The study's session key, made on first use (``O_EXCL``: two processes starting at
    once agree on one key)."""
    path = Path(root) / SESSION_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):          # the other process may not have written it yet
            data = path.read_bytes()
            if len(data) == 64:
                return bytes.fromhex(data.decode())
            time.sleep(0.02)
        raise RuntimeError(f"{path}: unreadable session key; remove it to make a new one "
                           "(every reader signs in again)") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text())


class Sessions:
    """Sign-in and session cookies of one station (a reader, or the coordinator)."""

    def __init__(self, store, role: str, reader: str | None = None):
        self.store, self.role, self.reader = store, role, reader
        if role == "coordinator":
            self.token_sha = store.meta["coordinator_token_sha256"]
        else:
            self.token_sha = store.meta["readers"][reader]["token_sha256"]
        self.key = session_key(store.root)
        study = hashlib.sha256(str(Path(store.root).resolve()).encode()).hexdigest()[:10]
        self.cookie = f"h2r_{study}_{role}_{reader or 'all'}"

    def token_ok(self, token) -> bool:
        if not isinstance(token, str) or not token or len(token) > 256:
            return False
        return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), self.token_sha)

    def value(self, iat: int) -> str:
        msg = f"v1|{self.role}|{self.reader or ''}|{self.token_sha}|{iat}".encode()
        return f"{iat}.{hmac.new(self.key, msg, hashlib.sha256).hexdigest()}"

    def valid(self, value) -> bool:
        try:
            iat = int(str(value or "").split(".", 1)[0])
        except ValueError:
            return False
        if not 0 <= time.time() - iat <= SESSION_MAX_AGE_S:
            return False
        return hmac.compare_digest(self.value(iat), str(value))

    def signed_in(self, request) -> bool:
        return self.valid(request.cookies.get(self.cookie))

    def set_cookie(self, response):
        response.set_cookie(self.cookie, self.value(int(time.time())),
                            max_age=SESSION_MAX_AGE_S, httponly=True, samesite="Strict",
                            path="/")
        return response


_LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>HER2Radiomics station</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; form-action 'self'">
<body style="font:16px sans-serif;margin:3em">
<h2>HER2Radiomics reader station</h2><p id="signin">{why}</p>
<form method="post" action="/login"><label>Token <input type="password" name="token"
id="token" autocomplete="off" size="32"></label> <button id="go">Sign in</button></form>
<p style="color:#666">Or open the link with your token that the study coordinator gave you.</p>
"""


def middleware(sessions: Sessions, routes: dict | None = None):
    """The aiohttp middleware of a station (see the module docstring). ``routes`` maps extra
    ``(method, path prefix)`` to handlers that need a signed-in browser."""
    from aiohttp import web

    routes = dict(routes or {})

    def _redirect_home(request):
        keep = {k: v for k, v in request.query.items() if k not in ("secret", "token")}
        clean = str(request.rel_url.with_path("/").with_query(keep))
        # a same-origin page that replaces itself: the Strict cookie then goes with the next
        # request even when the link was opened from another site (a 303 would not carry it)
        return web.Response(status=200, content_type="text/html", headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
            text=f'<!doctype html><meta http-equiv="refresh" content="0;url={clean}">'
                 f'<script>location.replace({json.dumps(clean)})</script>')

    def _login_page(why, status=401):
        return web.Response(status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"}, text=_LOGIN_PAGE.format(
                                why=why))

    @web.middleware
    async def gate(request, handler):
        token = request.query.get("secret") or request.query.get("token")
        if request.method == "GET" and token is not None and request.path in ("/",
                                                                             "/index.html"):
            if not sessions.token_ok(token):
                log.warning("sign-in refused (wrong token) from %s", request.remote)
                return _login_page("This link's token is not valid for this station.", 403)
            return sessions.set_cookie(_redirect_home(request))
        if request.path == "/login":
            if request.method == "POST":
                form = await request.post()
                if not sessions.token_ok(form.get("token")):
                    return _login_page("Wrong token.", 403)
                return sessions.set_cookie(web.Response(
                    status=303, headers={"Location": "/", "Cache-Control": "no-store"}))
            return _login_page("Sign in with the token of this station.", 200)
        signed_in = sessions.signed_in(request)
        if request.path == "/ws":
            origin = request.headers.get("Origin")
            if not signed_in or origin not in (f"http://{request.host}",
                                               f"https://{request.host}"):
                log.warning("websocket refused (signed in: %s, origin %s)", signed_in, origin)
                return web.Response(status=403, text="not signed in\n")
            request["h2r_signed_in"] = True          # read by the link protocol's onConnect
            return await handler(request)
        for (method, prefix), route in routes.items():
            if request.method == method and request.path.startswith(prefix):
                if not signed_in:
                    return web.Response(status=403, text="not signed in\n")
                return await route(request)
        if not signed_in and request.path in ("/", "/index.html"):
            if request.headers.get("Sec-Fetch-Site") == "cross-site":
                # the browser withheld the Strict cookie for a link on another site: one
                # same-origin bounce lets it send it (no loop: the bounce is same-origin)
                return web.Response(status=200, content_type="text/html",
                                    headers={"Cache-Control": "no-store"},
                                    text='<!doctype html><script>location.replace("/")'
                                         '</script>')
            return _login_page("Not signed in: open your station link once, or sign in.")
        return await handler(request)

    return gate


class CappedUnChunker:
    """Replaces ``wslink.protocol.UnChunker``: wslink's own lifts the message limit to 4 GiB
    after sign-in and keeps any number of partial messages."""

    _installed = False

    @classmethod
    def install(cls):
        if cls._installed:
            return
        import wslink.chunking
        import wslink.protocol

        class Capped(wslink.chunking.UnChunker):
            def set_max_message_size(self, size):
                super().set_max_message_size(min(size, MAX_MESSAGE_BYTES))

            def process_chunk(self, chunk):
                if len(chunk) < 12:
                    raise ValueError("chunk shorter than its header")
                if len(self.pending_messages) >= MAX_PENDING_MESSAGES and int.from_bytes(
                        chunk[:4], "little") not in self.pending_messages:
                    raise ValueError("too many partial messages")
                return super().process_chunk(chunk)

        wslink.protocol.UnChunker = Capped       # WslinkHandler.onConnect looks it up there
        cls._installed = True


def link_protocol(on_connect=None, on_close=None):
    """The wslink link protocol of a station: admits the sockets the HTTP gate signed in, and
    keeps one tab: the newest takes over, the older one is told and closed."""
    from wslink.websocket import LinkProtocol

    class Gate(LinkProtocol):
        ws_server = None                         # set when the server binds

        def __init__(self):
            super().__init__()
            self.signed_in: set = set()
            self.active: dict = {}               # client id -> time it said hello

        def onConnect(self, request, client_id):            # wslink's method name
            if request.get("h2r_signed_in"):
                self.signed_in.add(client_id)

        def onClose(self, client_id):
            self.signed_in.discard(client_id)
            was_active = self.active.pop(client_id, None) is not None
            if was_active and not self.active and on_close is not None:
                try:
                    on_close()
                except Exception:                            # never crash the server
                    log.exception("on_close failed")

        async def validateToken(self, token, client_id):
            if client_id not in self.signed_in:
                return False
            for old in [c for c in self.active if c != client_id]:
                self.take_over(old)
            self.active[client_id] = time.time()
            if on_connect is not None:
                try:
                    on_connect()
                except Exception:
                    log.exception("on_connect failed")
            return True

        def take_over(self, old):
            self.active.pop(old, None)
            self.publish("trame.actions.topic", [{
                "type": "method", "ref": "h2r", "method": "takenOver",
                "args": ["This station was opened in another tab or window; work there."]}],
                client_id=old)

            async def close_later():
                await asyncio.sleep(0.3)                     # the message first
                handler = self.ws_server._ws_handlers[0]     # wslink private attribute
                ws = handler.connections.get(old)
                if ws is not None:
                    await ws.close(code=4001, message=b"taken over")
            from trame_server.utils.asynchronous import create_task
            create_task(close_later())

    return Gate()


def finite(value) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError("not finite")
    return v


def install(server, sessions: Sessions, validators: dict, routes: dict | None = None,
            on_connect=None, on_close=None):
    """Put the gate in front of a trame server (before it starts).

    Parameters
    ----------
    validators : dict
        ``{predicate(key) -> bool: check(value) -> value}``: the first predicate that matches a
        key a browser sends decides; ``check`` returns the value to use (clamped) or raises
        (the change is dropped). Keys no predicate matches pass as they are, but only keys the
        server defined; ``trame__*`` keys never.
    routes : dict, optional
        ``{(method, path prefix): handler}`` for a signed-in browser only.
    on_connect, on_close : callable, optional
        When the station's tab connects (or takes over), and when it goes away (closed,
        navigated, crashed, network lost).
    """
    CappedUnChunker.install()
    gate = link_protocol(on_connect=on_connect, on_close=on_close)
    server.add_protocol_to_configure(lambda root: root.registerLinkProtocol(gate))

    def on_bind(ws_server):
        gate.ws_server = ws_server
        ws_server.app.middlewares.append(middleware(sessions, routes))
        handler = ws_server._ws_handlers[0]                  # wslink private attribute
        proto, original = handler.functionMap["trame.state.update"]

        def update_state(obj, changes):
            good, clamped = _validated(server, changes, validators)
            result = original(obj, good)
            if clamped:              # the sender (and the others) get the value that holds
                obj.clear_state_client_cache(*clamped)
                with server.state:
                    server.state.dirty(*clamped)
            return result
        handler.functionMap["trame.state.update"] = (proto, update_state)
        if "trame.rca.size" in handler.functionMap:
            rproto, rsize = handler.functionMap["trame.rca.size"]

            def rca_size(obj, area_name, origin, size):
                return rsize(obj, area_name, origin, _capped_size(size))
            handler.functionMap["trame.rca.size"] = (rproto, rca_size)
        for name in ("application.exit", "application.exit.later"):
            handler.functionMap.pop(name, None)
    server.controller.on_server_bind.add(on_bind)
    return gate


def _validated(server, changes, validators):
    good, clamped = [], []
    for change in changes if isinstance(changes, list) else []:
        key = change.get("key") if isinstance(change, dict) else None
        if not isinstance(key, str) or key.startswith("trame__") or not server.state.has(key):
            log.warning("state change refused: %r is not a key the station defined",
                        str(key)[:80])
            continue
        value = change.get("value")
        for matches, check in validators.items():
            if matches(key):
                try:
                    new = check(value)
                except (TypeError, ValueError, OverflowError) as exc:
                    log.warning("state change refused: %s = %.80r (%s)", key, value, exc)
                    value = _REFUSED
                    clamped.append(key)          # the sender gets the value that holds
                    break
                if new != value:
                    log.warning("state change clamped: %s = %.80r -> %.80r", key, value, new)
                    clamped.append(key)
                value = new
                break
        if value is not _REFUSED:
            good.append({"key": key, "value": value})
    return good, clamped


_REFUSED = object()


def _capped_size(size):
    """A remote view no larger than :data:`MAX_VIEW_PIXELS` (and a sane device ratio)."""
    try:
        w, h = max(1, int(size.get("w", 1))), max(1, int(size.get("h", 1)))
        p = min(max(float(size.get("p", 1.0)), 0.5), 3.0)
    except (AttributeError, TypeError, ValueError):
        return {"w": 640, "h": 480, "p": 1.0}
    scale = math.sqrt(MAX_VIEW_PIXELS / max(1.0, w * h * p * p))
    if scale < 1.0:
        w, h = max(1, int(w * scale)), max(1, int(h * scale))
    return {**size, "w": w, "h": h, "p": p}
