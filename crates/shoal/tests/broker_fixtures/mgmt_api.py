"""A management API call over urllib, shared by the mgmt_*.py fixtures:
`request(method, url, body, auth, raw)` -> (status, lower-cased headers,
parsed JSON body or None). HTTP errors are answers, not exceptions."""
import base64
import json
import urllib.error
import urllib.request


def request(method, url, body=None, auth=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if auth:
        tok = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", "Basic " + tok)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, headers, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, headers, text = e.code, e.headers, e.read().decode()
    return status, {k.lower(): v for k, v in headers.items()}, (json.loads(text) if text else None)
