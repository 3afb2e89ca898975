"""Users, vhosts and permissions created at runtime, driven by Debian's
`rabbitmqadmin` (declare/delete user, vhost, permission) and used by pika;
urllib for the status codes rabbitmqadmin does not show. Prints
`ok <check>` per check.

usage: mgmt_users.py AMQP_PORT ADMIN_PORT PHASE [OTHER_AMQP_PORT OTHER_ADMIN_PORT]

PHASE `create`: declare, use, refuse, delete (first broker start).
PHASE `after-restart`: what `create` left is still there.
PHASE `definitions`: export from the first broker, import into the second,
log in there with the imported user.
"""
import json
import os
import subprocess
import sys
import time

import pika
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker, ConnectionClosedByBroker

from mgmt_api import request

amqp_port, admin_port, phase = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
API = f"http://127.0.0.1:{admin_port}/api"


def expect(cond, what, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}")
        sys.exit(1)


def admin(*args, port=None, check=True):
    """rabbitmqadmin as the configured administrator."""
    cmd = ["rabbitmqadmin", "-H", "127.0.0.1", "-P", str(port or admin_port),
           "-u", "admin", "-p", "admin-pw", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, HOME=os.environ.get("TMPDIR", "/tmp")))
    if check:
        expect(r.returncode == 0, "rabbitmqadmin " + " ".join(args), r.stdout + r.stderr)
    return r


def call(method, path, body=None, auth=("admin", "admin-pw"), base=API):
    status, _headers, parsed = request(method, base + path, body, auth)
    return status, parsed


def connect(user, password, vhost, port=None):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=port or amqp_port, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1,
        heartbeat=0))


def login_refused(user, password, vhost, what):
    try:
        connect(user, password, vhost).close()
    except AMQPConnectionError:
        return
    expect(False, what, f"{user} logged in to {vhost}")


def closed_by_broker(conn, within=10.0):
    """The reply code and text of the broker's connection.close, if it
    comes within `within` seconds."""
    deadline = time.time() + within
    try:
        while time.time() < deadline:
            conn.process_data_events(time_limit=0.2)
    except ConnectionClosedByBroker as e:
        return e.reply_code, e.reply_text
    return None


if phase == "create":
    admin("declare", "user", "name=carol", "password=carol-pw", "tags=management")
    admin("declare", "vhost", "name=dev")
    admin("declare", "permission", "vhost=dev", "user=carol",
          "configure=^carol\\..*", "write=.*", "read=.*")
    users = json.loads(admin("-f", "raw_json", "list", "users").stdout)
    carol = [u for u in users if u["name"] == "carol"]
    expect(carol and carol[0]["tags"] == ["management"]
           and carol[0]["hashing_algorithm"] == "rabbit_password_hashing_sha256", "list-users", users)
    vhosts = json.loads(admin("-f", "raw_json", "list", "vhosts").stdout)
    expect(any(v["name"] == "dev" for v in vhosts), "list-vhosts", vhosts)
    print("ok rabbitmqadmin-declare")

    # pika logs in as carol to dev, publishes and consumes.
    c = connect("carol", "carol-pw", "dev")
    ch = c.channel()
    ch.queue_declare("carol.jobs", durable=True)
    ch.basic_publish("", "carol.jobs", b"job-1", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", "carol.jobs", b"job-2", pika.BasicProperties(delivery_mode=2))
    got = []
    for method, _props, body in ch.consume("carol.jobs", inactivity_timeout=5):
        if method is None:
            break
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == 1:
            break
    ch.cancel()
    expect(got == [b"job-1"], "pika-consume", got)
    try:
        ch.queue_declare("other.q")
        expect(False, "configure-pattern", "declared a queue outside ^carol\\..*")
    except ChannelClosedByBroker as e:
        expect(e.reply_code == 403, "configure-pattern-403", e)
    print("ok pika-uses-runtime-user")

    # The wrong password and an undeclared vhost are refused.
    login_refused("carol", "wrong", "dev", "wrong-password")
    login_refused("carol", "carol-pw", "nope", "undeclared-vhost")
    print("ok login-checked")

    # Deleting the permission: a new channel's queue.declare is refused
    # with 403 ACCESS_REFUSED; the channel that checked it before keeps
    # its cached check (RabbitMQ's per-channel permission cache).
    kept = c.channel()
    kept.queue_declare("carol.kept", durable=False)
    admin("delete", "permission", "vhost=dev", "user=carol")
    st, _ = call("GET", "/permissions/dev/carol")
    expect(st == 404, "permission-gone", st)
    kept.queue_declare("carol.kept", durable=False)
    fresh = c.channel()
    try:
        fresh.queue_declare("carol.jobs2")
        expect(False, "delete-permission", "queue.declare succeeded without permissions")
    except ChannelClosedByBroker as e:
        expect(e.reply_code == 403 and e.reply_text.startswith("ACCESS_REFUSED"), "delete-permission-403", e)
    c.close()
    print("ok delete-permission-refuses-new-channels")

    # A bad pattern is a 400 with the reason, and nothing changes.
    st, body = call("PUT", "/permissions/dev/carol", {"configure": "(", "write": ".*", "read": ".*"})
    expect(st == 400 and body["error"] == "bad_request" and "configure" in body["reason"]
           and "unclosed group" in body["reason"], "bad-regex-400", (st, body))
    r = admin("declare", "permission", "vhost=dev", "user=carol", "configure=[", "write=.*", "read=.*", check=False)
    expect(r.returncode != 0, "bad-regex-rabbitmqadmin", r.stdout + r.stderr)
    st, _ = call("GET", "/permissions/dev/carol")
    expect(st == 404, "bad-regex-left-nothing", st)
    print("ok bad-regex-400")
    admin("declare", "permission", "vhost=dev", "user=carol", "configure=.*", "write=.*", "read=.*")

    # Only administrators write users, vhosts and permissions: 401 as
    # RabbitMQ 3.x answers `not_authorised`, without a challenge.
    for method, path, body in [("PUT", "/users/eve", {"password": "x", "tags": ""}),
                               ("DELETE", "/users/carol", None),
                               ("PUT", "/vhosts/evil", {}),
                               ("PUT", "/permissions/dev/app", {"configure": ".*", "write": ".*", "read": ".*"})]:
        st, body = call(method, path, body, auth=("watcher", "watcher-pw"))
        expect(st == 401 and body["error"] == "not_authorised", "non-admin " + method + " " + path, (st, body))
    st, _ = call("GET", "/users/carol")
    expect(st == 200, "carol-still-there", st)
    print("ok admin-only")

    # Limits and fixed entries: a clear 400.
    st, body = call("PUT", "/users/" + "u" * 300, {"password": "x", "tags": ""})
    expect(st == 400 and "255" in body["reason"], "long-name-400", (st, body))
    st, body = call("PUT", "/users/mallory", {"password": "x" * 2000, "tags": ""})
    expect(st == 400 and "1024" in body["reason"], "long-password-400", (st, body))
    st, body = call("DELETE", "/users/admin")
    expect(st == 400 and "configuration file" in body["reason"], "config-user-fixed", (st, body))
    st, body = call("DELETE", "/users/nobody")
    expect(st == 404, "delete-missing-user-404", (st, body))
    st, body = call("PUT", "/users/frank", {"password": "x"})
    expect(st == 400 and "tags" in body["reason"], "tags-required", (st, body))
    st, body = call("PUT", "/permissions/dev/nobody", {"configure": ".*", "write": ".*", "read": ".*"})
    expect(st == 400 and "vhost_or_user_not_found" in body["reason"], "permission-for-missing-user", (st, body))
    st, body = call("PUT", "/permissions/dev/carol", {"configure": ".*", "write": ".*"})
    expect(st == 400 and "read" in body["reason"], "permission-key-missing", (st, body))
    print("ok limits")

    # Deleting a user closes its connections with 320 CONNECTION_FORCED.
    admin("declare", "user", "name=dave", "password=dave-pw", "tags=")
    admin("declare", "permission", "vhost=dev", "user=dave", "configure=.*", "write=.*", "read=.*")
    d = connect("dave", "dave-pw", "dev")
    d.channel().queue_declare("dave.q")
    admin("delete", "user", "name=dave")
    closed = closed_by_broker(d)
    expect(closed is not None and closed[0] == 320 and "dave" in closed[1], "delete-user-closes", closed)
    login_refused("dave", "dave-pw", "dev", "deleted-user-login")
    print("ok delete-user-closes-connection")

    # Deleting a vhost closes its connections; its queues and messages go.
    admin("declare", "vhost", "name=scratch")
    admin("declare", "permission", "vhost=scratch", "user=carol", "configure=.*", "write=.*", "read=.*")
    s = connect("carol", "carol-pw", "scratch")
    sch = s.channel()
    sch.queue_declare("carol.tmp", durable=True)
    sch.basic_publish("", "carol.tmp", b"gone", pika.BasicProperties(delivery_mode=2))
    admin("delete", "vhost", "name=scratch")
    closed = closed_by_broker(s)
    expect(closed is not None and closed[0] == 320 and "scratch" in closed[1], "delete-vhost-closes", closed)
    admin("declare", "vhost", "name=scratch")
    st, body = call("GET", "/queues/scratch")
    expect(st == 200 and body == [], "vhost-queues-gone", (st, body))
    st, body = call("GET", "/permissions/scratch/carol")
    expect(st == 404, "vhost-permissions-gone", (st, body))
    admin("delete", "vhost", "name=scratch")
    print("ok delete-vhost")
    print("ALL OK")

elif phase == "after-restart":
    st, u = call("GET", "/users/carol")
    expect(st == 200 and u["tags"] == ["management"], "user-survives", (st, u))
    st, _ = call("GET", "/vhosts/dev")
    expect(st == 200, "vhost-survives", st)
    st, p = call("GET", "/permissions/dev/carol")
    expect(st == 200 and p["configure"] == ".*", "permission-survives", (st, p))
    st, _ = call("GET", "/users/dave")
    expect(st == 404, "deleted-user-stays-deleted", st)
    c = connect("carol", "carol-pw", "dev")
    ch = c.channel()
    method, _props, body = ch.basic_get("carol.jobs", auto_ack=True)
    expect(body == b"job-2", "messages-survive", body)
    c.close()
    print("ok survives-restart")
    print("ALL OK")

elif phase == "definitions":
    other_amqp, other_admin = int(sys.argv[4]), int(sys.argv[5])
    OTHER = f"http://127.0.0.1:{other_admin}/api"
    st, _ = call("PUT", "/users/erin", {"password": "erin-pw", "tags": ["monitoring"]})
    expect(st == 201, "create-erin", st)
    st, _ = call("PUT", "/vhosts/shared", {})
    expect(st == 201, "create-shared", st)
    st, _ = call("PUT", "/permissions/shared/erin", {"configure": "^erin\\..*", "write": ".*", "read": ".*"})
    expect(st == 201, "create-permission", st)
    st, defs = call("GET", "/definitions")
    expect(st == 200 and any(u["name"] == "erin" and u["password_hash"] for u in defs["users"])
           and any(v["name"] == "shared" for v in defs["vhosts"])
           and any(p["user"] == "erin" and p["vhost"] == "shared" for p in defs["permissions"]), "export", defs)
    st, body = call("POST", "/definitions", defs, base=OTHER)
    expect(st in (200, 201, 204), "import", (st, body))
    st, again = call("GET", "/definitions", base=OTHER)
    for k in ["users", "vhosts", "permissions"]:
        expect(again[k] == defs[k], "round-trip " + k, (defs[k], again[k]))
    c = connect("erin", "erin-pw", "shared", port=other_amqp)
    c.channel().queue_declare("erin.q")
    c.close()
    st, _ = call("GET", "/overview", auth=("erin", "erin-pw"), base=OTHER)
    expect(st == 200, "imported-tags", st)
    # An import's users, vhosts and permissions apply together or not at
    # all: a permission for a vhost nobody declares leaves no user behind.
    bad = {"users": [{"name": "ghost", "password": "x", "tags": ""}], "vhosts": [{"name": "half"}],
           "permissions": [{"user": "ghost", "vhost": "nowhere", "configure": ".*", "write": ".*", "read": ".*"}]}
    st, body = call("POST", "/definitions", bad, base=OTHER)
    expect(st == 400 and "vhost_or_user_not_found" in body["reason"], "import-bad-permission-400", (st, body))
    st, _ = call("GET", "/users/ghost", base=OTHER)
    expect(st == 404, "import-all-or-nothing-user", st)
    st, _ = call("GET", "/vhosts/half", base=OTHER)
    expect(st == 404, "import-all-or-nothing-vhost", st)
    print("ok definitions-carry-users")
    print("ALL OK")
