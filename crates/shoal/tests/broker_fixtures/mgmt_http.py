"""The management API over plain HTTP (urllib): auth (401 with
WWW-Authenticate for a failed login, 401 not_authorised by tag and by
permission, as RabbitMQ 3.x), 404, 400 for bad JSON and
inequivalent declarations, 413 for an oversized body, the health checks,
publish/get round trips, policies by user tag, a connection's client
properties and negotiated limits, and a definitions export ->
import -> export round trip (policies included) into a second broker. Prints `ok <check>` per check.

usage: mgmt_http.py AMQP_PORT ADMIN_PORT ADMIN_PORT_OF_SECOND_BROKER
"""
import base64
import json
import sys

from mgmt_api import request

_, amqp_port, admin_port, other_port = sys.argv
BASE = f"http://127.0.0.1:{admin_port}/api"
OTHER = f"http://127.0.0.1:{other_port}/api"
ADMIN = ("admin", "admin-pw")


def call(method, path, body=None, auth=ADMIN, base=BASE, raw=None):
    return request(method, base + path, body, auth, raw)


def expect(cond, what, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}")
        sys.exit(1)


def error_shape(body):
    return isinstance(body, dict) and "error" in body and "reason" in body


# 401: none, wrong password, unknown user; the challenge names the realm.
st, hd, body = call("GET", "/overview", auth=None)
expect(st == 401 and "Basic" in hd.get("www-authenticate", "") and error_shape(body), "401-no-credentials", (st, hd, body))
st, hd, body = call("GET", "/overview", auth=("admin", "wrong"))
expect(st == 401 and "www-authenticate" in hd and error_shape(body), "401-bad-password", (st, body))
st, _, body = call("GET", "/overview", auth=("nobody", "x"))
expect(st == 401, "401-unknown-user", (st, body))
print("ok 401")

# Authenticated but not allowed: no management tag; management tag asking
# for admin views; writes beyond the user's permissions. RabbitMQ 3.x
# answers these 401 `not_authorised` (rabbit_mgmt_util:not_authorised),
# without the WWW-Authenticate challenge of a failed login.
def refused(st, hd, body):
    return st == 401 and error_shape(body) and body["error"] == "not_authorised" and "www-authenticate" not in hd
st, hd, body = call("GET", "/overview", auth=("plain", "plain-pw"))
expect(refused(st, hd, body) and body["reason"] == "Not management user", "401-untagged", (st, hd, body))
st, hd, body = call("GET", "/users", auth=("app", "app-pw"))
expect(refused(st, hd, body) and body["reason"] == "Not administrator user", "401-users", (st, body))
st, hd, body = call("GET", "/nodes", auth=("app", "app-pw"))
expect(refused(st, hd, body), "401-nodes", (st, body))
st, hd, body = call("PUT", "/queues/%2F/not-app", {"durable": False}, auth=("app", "app-pw"))
expect(refused(st, hd, body) and "refused" in body["reason"], "401-configure", (st, body))
st, _, body = call("PUT", "/queues/%2F/app.q1", {"durable": False}, auth=("app", "app-pw"))
expect(st == 201, "app-may-declare-app-queue", (st, body))
st, hd, body = call("GET", "/queues/staging", auth=("app", "app-pw"))
expect(refused(st, hd, body), "401-vhost", (st, body))
st, hd, body = call("PUT", "/queues/%2F/w.q", {}, auth=("watcher", "watcher-pw"))
expect(refused(st, hd, body), "401-monitoring-cannot-configure", (st, body))
print("ok not-authorised")

# Visibility: monitoring sees every vhost; management only its own.
st, _, rows = call("GET", "/vhosts", auth=("watcher", "watcher-pw"))
expect(st == 200 and sorted(r["name"] for r in rows) == ["/", "staging"], "monitor-vhosts", rows)
st, _, rows = call("GET", "/vhosts", auth=("app", "app-pw"))
expect(st == 200 and [r["name"] for r in rows] == ["/"], "management-vhosts", rows)
st, _, me = call("GET", "/whoami", auth=("app", "app-pw"))
expect(st == 200 and me == {"name": "app", "tags": ["management"]}, "whoami", me)
print("ok visibility")

# 404s in RabbitMQ's shape.
for path in ["/queues/%2F/missing", "/exchanges/%2F/missing", "/queues/nosuchvhost", "/no/such/endpoint"]:
    st, _, body = call("GET", path)
    expect(st == 404 and body == {"error": "Object Not Found", "reason": "Not Found"}, "404 " + path, (st, body))
st, _, body = call("DELETE", "/queues/%2F/missing")
expect(st == 404, "404-delete-missing", (st, body))
print("ok 404")

# 400: bad JSON names the problem; an inequivalent redeclaration gives
# RabbitMQ's wording; bad field types.
st, _, body = call("PUT", "/queues/%2F/q400", raw=b"{not json")
expect(st == 400 and body["error"] == "bad_request" and "JSON" in body["reason"], "400-bad-json", (st, body))
st, _, _ = call("PUT", "/queues/%2F/q400", {"durable": True})
expect(st == 201, "declare-q400")
st, _, _ = call("PUT", "/queues/%2F/q400", {"durable": True})
expect(st == 204, "redeclare-204")
st, _, body = call("PUT", "/queues/%2F/q400", {"durable": False})
expect(st == 400 and "inequivalent arg 'durable'" in body["reason"], "400-inequivalent", (st, body))
st, _, body = call("PUT", "/queues/%2F/q400b", {"durable": "maybe"})
expect(st == 400 and "durable" in body["reason"], "400-bad-bool", (st, body))
st, _, body = call("PUT", "/exchanges/%2F/x400", {"durable": True})
expect(st == 400 and "type" in body["reason"], "400-missing-type", (st, body))
st, _, body = call("POST", "/queues/%2F/q400/get", {"count": 1, "ackmode": "sometimes"})
expect(st == 400 and "ackmode" in body["reason"], "400-ackmode", (st, body))
st, _, body = call("PUT", "/queues/%2F/q413", raw=b"[" + b" " * (21 << 20) + b"]")
expect(st == 413, "413-too-large", st)
# A client that announces an oversized body with Expect: 100-continue is
# answered 413 at once, without a 100 and without having to send it.
import socket
with socket.create_connection(("127.0.0.1", int(admin_port)), timeout=10) as s:
    tok = base64.b64encode(b"admin:admin-pw").decode()
    s.sendall(("PUT /api/queues/%2F/q413 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + tok +
               "\r\nContent-Type: application/json\r\nContent-Length: " + str(30 << 20) +
               "\r\nExpect: 100-continue\r\n\r\n").encode())
    head = s.recv(4096).decode(errors="replace")
    expect(head.startswith("HTTP/1.1 413"), "413-expect-continue", head[:200])
st, _, body = call("GET", "/overview")
expect(st == 200, "server-still-serving", st)
print("ok 400")

# Publish and get: routed flag, properties and base64 payloads come back.
st, _, _ = call("PUT", "/exchanges/%2F/x.api", {"type": "topic", "durable": True})
expect(st == 201, "declare-exchange")
st, hd, _ = call("POST", "/bindings/%2F/e/x.api/q/q400", {"routing_key": "a.*", "arguments": {}})
expect(st == 201 and hd.get("location", "").endswith("/x.api/q/q400/a.%2A"), "binding-location", (st, hd))
st, _, r = call("POST", "/exchanges/%2F/x.api/publish", {"routing_key": "a.b", "payload": "aGVsbG8=",
    "payload_encoding": "base64", "properties": {"content_type": "text/plain", "headers": {"h": 1}, "delivery_mode": 2}})
expect(st == 200 and r == {"routed": True}, "publish-routed", (st, r))
st, _, r = call("POST", "/exchanges/%2F/x.api/publish", {"routing_key": "zzz", "payload": "x", "payload_encoding": "string", "properties": {}})
expect(r == {"routed": False}, "publish-unrouted", r)
st, _, msgs = call("POST", "/queues/%2F/q400/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
expect(st == 200 and len(msgs) == 1 and msgs[0]["payload"] == "hello" and msgs[0]["redelivered"] is False
       and msgs[0]["properties"]["headers"] == {"h": 1} and msgs[0]["routing_key"] == "a.b"
       and msgs[0]["exchange"] == "x.api" and msgs[0]["message_count"] == 0, "get-requeue", msgs)
st, _, msgs = call("POST", "/queues/%2F/q400/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"})
expect(msgs[0]["payload"] == "aGVsbG8=" and msgs[0]["payload_encoding"] == "base64" and msgs[0]["redelivered"] is True, "get-base64", msgs)
st, _, q = call("GET", "/queues/%2F/q400")
expect(q["messages"] == 0 and q["durable"] is True and "messages_details" in q, "queue-emptied", q)
print("ok publish-get")

# Bindings listed with a properties_key that deletes them.
st, _, rows = call("GET", "/queues/%2F/q400/bindings")
keys = [(r["source"], r["routing_key"], r["properties_key"]) for r in rows]
expect(("", "q400", "q400") in keys and ("x.api", "a.*", "a.%2A") in keys, "queue-bindings", keys)
st, _, _ = call("DELETE", "/bindings/%2F/e/x.api/q/q400/a.%252A")
expect(st == 204, "delete-binding", st)
st, _, rows = call("GET", "/bindings/%2F/e/x.api/q/q400")
expect(rows == [], "binding-gone", rows)
st, _, _ = call("POST", "/bindings/%2F/e/x.api/q/q400", {"routing_key": "a.*"})
print("ok bindings")

# Pagination, as the RabbitMQ management UI and HTTP clients ask for it:
# name filter (substring, case-insensitive; or regex), sort, page, columns.
for n in ("page.a", "page.b", "PAGE.c", "other.p"):
    st, _, _ = call("PUT", "/queues/%2F/" + n, {"durable": False})
    expect(st == 201, "declare-" + n, st)
st, _, p = call("GET", "/queues/%2F?page=2&page_size=2&name=page.&sort=name&columns=name,messages")
expect(st == 200 and p["filtered_count"] == 3 and p["page_count"] == 2 and p["page"] == 2
       and p["item_count"] == 1 and p["items"] == [{"name": "page.b", "messages": 0}]
       and p["total_count"] >= 4, "paginate", (st, p))
st, _, p = call("GET", "/queues?page=1&name=%5Eother%5C.&use_regex=true")
expect(st == 200 and [q["name"] for q in p["items"]] == ["other.p"], "paginate-regex", (st, p))
st, _, p = call("GET", "/queues/%2F?page=9&page_size=2")
expect(st == 400 and error_shape(p), "page-out-of-range", (st, p))
st, _, p = call("GET", "/exchanges/%2F?page=1&page_size=501")
expect(st == 400 and "page_size" in p["reason"], "page-size-limit", (st, p))
st, _, lst = call("GET", "/queues/%2F?name=zzz")
expect(st == 200 and isinstance(lst, list) and len(lst) >= 4, "no-page-plain-list", (st, lst))
print("ok pagination")

# Health checks.
st, _, r = call("GET", "/health/checks/alarms")
expect(st == 200 and r["status"] == "ok", "alarms", r)
st, _, r = call("GET", "/health/checks/virtual-hosts")
expect(st == 200 and r["status"] == "ok", "virtual-hosts", r)
st, _, r = call("GET", f"/health/checks/port-listener/{amqp_port}")
expect(st == 200 and r["status"] == "ok", "port-listener", r)
st, _, r = call("GET", "/health/checks/port-listener/1")
expect(st == 503 and r["status"] == "failed", "port-listener-missing", r)
st, _, r = call("GET", "/health/checks/protocol-listener/amqp091")
expect(st == 200 and r["status"] == "ok", "protocol-listener", r)
st, _, r = call("GET", "/aliveness-test/%2F")
expect(st == 200 and r == {"status": "ok"}, "aliveness", r)
print("ok health")

# Policies: an administrator anywhere, a policymaker in its vhosts only, a
# management user not at all (401 not_authorised, as RabbitMQ 3.x).
PM = ("pm", "pm-pw")
policy = {"pattern": "^pm\\.", "definition": {"max-length": 10}, "priority": 2, "apply-to": "queues"}
st, _, body = call("PUT", "/policies/%2F/pm-cap", policy, auth=PM)
expect(st == 201, "policymaker-put", (st, body))
st, _, body = call("PUT", "/policies/%2F/pm-cap", policy, auth=PM)
expect(st == 204, "policymaker-replace", (st, body))
st, hd, body = call("PUT", "/policies/staging/pm-cap", policy, auth=PM)
expect(refused(st, hd, body), "policymaker-other-vhost-401", (st, body))
st, hd, body = call("PUT", "/policies/%2F/app-cap", policy, auth=("app", "app-pw"))
expect(refused(st, hd, body), "management-policy-401", (st, body))
st, _, rows = call("GET", "/policies", auth=PM)
expect(st == 200 and rows == [dict(policy, vhost="/", name="pm-cap")], "policymaker-list", rows)
st, _, body = call("PUT", "/policies/%2F/bad", {"pattern": "x", "definition": {"foo": 1}})
expect(st == 400 and "not recognised policy settings" in body["reason"], "policy-400", (st, body))
print("ok policies")

# A connection's row: the client's properties and what was negotiated.
import pika
params = pika.ConnectionParameters(
    host="127.0.0.1", port=int(amqp_port), credentials=pika.PlainCredentials(*ADMIN),
    heartbeat=30, frame_max=65536, client_properties={"connection_name": "mgmt-check"})
pc = pika.BlockingConnection(params)
st, _, rows = call("GET", "/connections")
row = [r for r in rows if r.get("client_properties", {}).get("connection_name") == "mgmt-check"]
expect(st == 200 and len(row) == 1, "connection-row", rows)
row = row[0]
expect(row["client_properties"]["product"] == "Pika Python Client Library"
       and row["client_properties"]["capabilities"]["publisher_confirms"] is True, "client-properties", row)
expect(row["auth_mechanism"] == "PLAIN" and row["frame_max"] == 65536 and row["timeout"] == 30
       and row["channel_max"] > 0, "negotiated", row)
pc.close()
print("ok connections")

# Definitions: export, import into another broker, export again: the same.
st, _, defs = call("GET", "/definitions")
expect(st == 200 and any(q["name"] == "q400" for q in defs["queues"])
       and any(x["name"] == "x.api" for x in defs["exchanges"])
       and any(b["source"] == "x.api" for b in defs["bindings"]), "export", defs)
st, _, body = call("POST", "/definitions", raw=json.dumps(defs).encode(), base=OTHER)
expect(st in (200, 201, 204), "import", (st, body))
st, _, again = call("GET", "/definitions", base=OTHER)
expect([p["name"] for p in defs["policies"]] == ["pm-cap"], "export-policies", defs["policies"])
for k in ["queues", "exchanges", "bindings", "users", "vhosts", "permissions", "policies"]:
    expect(again[k] == defs[k], "round-trip " + k, (defs[k], again[k]))
bad = dict(defs, policies=[{"name": "p", "vhost": "/", "pattern": ".*", "definition": {}}])
st, _, body = call("POST", "/definitions", raw=json.dumps(bad).encode(), base=OTHER)
expect(st == 400 and "no policy provided" in body["reason"], "import-bad-policy-400", (st, body))
st, _, body = call("POST", "/definitions", raw=b'{"queues": [{"durable": true}]}', base=OTHER)
expect(st == 400 and "name" in body["reason"], "import-bad-400", (st, body))
print("ok definitions")
print("ALL OK")
