"""A small headless-Chromium client over the Chrome DevTools Protocol (CDP), for tests that look at rendered pages.

    with Browser() as b:
        b.width(1400)
        b.goto('http://127.0.0.1:8000/index.html')
        b.js('document.title')                      # -> the value, JSON-decoded
        b.screenshot('page.png', full=True)

Chromium runs with a fresh profile and resolves no host but 127.0.0.1, so a page can load nothing from the network.
`websocket-client` (module `websocket`) carries the protocol; nothing else is needed.
"""
import base64, itertools, json, shutil, subprocess, tempfile, time
from pathlib import Path

import websocket

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--hide-scrollbars', '--window-size=1280,900',
         # Chromium's own services (sign-in, updates) must not leave the machine either
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']

class BrowserError(RuntimeError): "Chromium did not start, or a CDP command or a page's script failed."

class Browser:
    "One headless Chromium with one page (tab): `goto` a URL, run `js` in it, set its `width`, take a `screenshot`."
    def __init__(self, binary=CHROMIUM, timeout=30):
        if not binary: raise BrowserError('chromium is not installed')
        self.timeout, self.profile = timeout, Path(tempfile.mkdtemp(prefix='cdp-profile-'))
        self.proc = subprocess.Popen([binary, *FLAGS, '--remote-debugging-port=0', f'--user-data-dir={self.profile}',
                                      'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ids, self.events = itertools.count(1), []
        try: self._connect()
        except BaseException: self.close(); raise

    def _connect(self):
        "Read the port Chromium chose from DevToolsActivePort, attach to its page target."
        port_file, end = self.profile/'DevToolsActivePort', time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().count('\n') >= 1):
            if self.proc.poll() is not None: raise BrowserError(f'chromium exited: {self.proc.stderr.read()[-2000:]!r}')
            if time.monotonic() > end: raise BrowserError('chromium did not open its debugging port')
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        browser = websocket.create_connection(f'ws://127.0.0.1:{port}{port_file.read_text().split()[1]}',
                                              timeout=self.timeout, suppress_origin=True)
        self.ws = browser
        targets = self.send('Target.getTargets')['targetInfos']
        page = next(t for t in targets if t['type'] == 'page')
        self.session = self.send('Target.attachToTarget', targetId=page['targetId'], flatten=True)['sessionId']
        for domain in ('Page', 'Runtime'): self.send(f'{domain}.enable')

    def send(self, method, **params):
        "Send one CDP command (to the page once attached) and return its result; events that arrive meanwhile are kept."
        msg = {'id': next(self.ids), 'method': method, 'params': params}
        if getattr(self, 'session', None): msg['sessionId'] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            r = json.loads(self.ws.recv())
            if r.get('id') == msg['id']:
                if 'error' in r: raise BrowserError(f'{method}: {r["error"]}')
                return r.get('result', {})
            if 'method' in r: self.events.append(r)

    def wait_event(self, method, timeout=None):
        "Wait for the CDP event `method` (one received since the last wait counts) and return its params."
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, e in enumerate(self.events):
                if e['method'] == method: return self.events.pop(i)['params']
            if time.monotonic() > end: raise BrowserError(f'no {method} within {timeout or self.timeout} s')
            self.ws.settimeout(max(0.01, end - time.monotonic()))
            try: r = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException: continue
            finally: self.ws.settimeout(self.timeout)
            if 'method' in r: self.events.append(r)

    def goto(self, url, settle=0.3):
        "Load `url`, wait for its load event and then `settle` seconds (scripts such as MathJax or search finish)."
        self.events.clear()
        r = self.send('Page.navigate', url=url)
        if r.get('errorText'): raise BrowserError(f'{url}: {r["errorText"]}')
        self.wait_event('Page.loadEventFired')
        time.sleep(settle)
        return self

    def js(self, expr, await_promise=True):
        "The value of the JavaScript expression `expr` in the page (JSON-like values come back as Python values)."
        r = self.send('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=await_promise)
        if 'exceptionDetails' in r:
            d = r['exceptionDetails']
            raise BrowserError(f'{expr[:200]!r} threw: {d.get("exception", {}).get("description") or d.get("text")}')
        return r['result'].get('value')

    def wait_for(self, expr, timeout=None, every=0.1):
        "Poll the JavaScript expression `expr` until it is truthy; return its value."
        end = time.monotonic() + (timeout or self.timeout)
        while not (v := self.js(expr)):
            if time.monotonic() > end: raise BrowserError(f'{expr!r} stayed falsy for {timeout or self.timeout} s')
            time.sleep(every)
        return v

    def width(self, px, height=900):
        "Make the window `px` CSS pixels wide (a phone is ~420) and `height` high; the page relayouts at once."
        self.size = (px, height)
        self.send('Emulation.setDeviceMetricsOverride', width=px, height=height, deviceScaleFactor=1, mobile=False)
        return self

    def screenshot(self, path, full=False, selector=None):
        """Save a PNG of the window; of the whole page (`full`: the window is made as high as the page meanwhile);
        or of the element matching the CSS `selector`, scrolled to the top of the window (as much of it as fits)."""
        params = {'format': 'png'}
        if selector:
            x, y, w, h = self.js(f'(e => {{ e.scrollIntoView(); const r = e.getBoundingClientRect(); return '
                                 f'[r.x + scrollX, r.y + scrollY, r.width, Math.min(r.height, innerHeight - r.y)] }})'
                                 f'(document.querySelector({json.dumps(selector)}))')
            params['clip'] = dict(x=x, y=y, width=w, height=h, scale=1)
        size = getattr(self, 'size', None)
        if full:
            self.width(size[0] if size else self.js('innerWidth'), self.js('document.documentElement.scrollHeight'))
        try: Path(path).write_bytes(base64.b64decode(self.send('Page.captureScreenshot', **params)['data']))
        finally:
            if full: self.width(*size) if size else self.send('Emulation.clearDeviceMetricsOverride')
        return Path(path)

    def close(self):
        "Quit Chromium and remove its profile."
        try: self.ws.close()
        except Exception: pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()
