// Trades the one-time token that `peernet ui` put after the # of its link
// for a session cookie and the page's key, then opens the page. The token is taken out of the
// address bar first, so it is not left in the history or a bookmark (it
// works only once anyway).
'use strict';

(async () => {
  const status = document.getElementById('login-status');
  const error = document.getElementById('login-error');
  const fail = (sentence) => {
    status.textContent = 'Not signed in.';
    // Server sentences may or may not end with a full stop.
    const end = /[.!?]$/.test(sentence) ? '' : '.';
    error.textContent = `${sentence}${end} Run peernet ui again for a new link.`;
    error.hidden = false;
  };

  let token = location.hash.slice(1);
  try { token = decodeURIComponent(token); } catch { /* not %-encoded: use as is */ }
  history.replaceState(null, '', location.pathname + location.search);
  if (!token) return fail('This link carries no sign-in token.');

  try {
    const res = await fetch('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify({ token }),
    });
    if (res.ok) {
      // The page's key goes with every API request. Storage is per port,
      // unlike the cookie, so a page another program serves on this
      // machine cannot read it.
      const { key } = await res.json();
      localStorage.setItem('peernet-key', key);
      location.replace('/');
      return;
    }
    let sentence = `Signing in failed (HTTP ${res.status}).`;
    try {
      const body = await res.json();
      if (body && body.error) sentence = body.error;
    } catch { /* not JSON: keep the status line */ }
    fail(sentence);
  } catch {
    fail('peernet is not answering; is it still running?');
  }
})();
