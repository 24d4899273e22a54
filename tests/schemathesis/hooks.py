"""Schemathesis hooks of the OpenAPI run (tests/schemathesis/run.sh).

A few rules of the API relate several parameters, or a parameter and the server's data, and a
JSON Schema (so the generator) cannot say them; server/src/openapi.json states each in the
operation's description. A schema-valid request refused by one of them is the documented
answer, not a rejected valid request: these hooks drop exactly those "schema-valid request
rejected" (positive_data_acceptance) failures, recognised by status, operation, the field the
server names and its message. Every other check still judges these responses (status and
content type documented, body valid against its schema, no 5xx), and every other refusal is
still a failure.
"""

import json

import schemathesis

# (method, path) -> the documented refusals of schema-valid requests: (field, text in the message).
CROSS_FIELD_RULES = {
    # `from` after `to`, or a range of more than 3,700 days (also with a default `from`/`to`:
    # `to` defaults to today, `from` to 29 days before `to`); a zone with a part-hour offset at
    # some hour of the range (Asia/Kolkata always, most zones before they took standard time).
    ("GET", "/api/stats"): [("from", "is after to"), ("from", "days at once"), ("tz", "part-hour offset")],
    ("GET", "/api/cohorts"): [("from", "is after to")],
    ("GET", "/api/refunds"): [("from", "is after to")],
    ("GET", "/api/refunds/unmatched"): [("from", "is after to")],
    # Any text is a schema-valid `sql`; whether it is one read-only query over the tables (and
    # plans) is SQL's grammar and the data's schema. The examples phase sends the schema's
    # example query, which must answer 200.
    ("POST", "/api/sql"): [("sql", "")],
}


# (method, path) -> statuses that depend on the server's state, not on the request: a tracking
# link that was disabled (PATCH enabled: false, which the stateful phase does) answers every
# visit 410 Gone, before looking at its parameters, valid (ST202) or not (ST201).
STATE_RULES = {
    ("GET", "/r/{slug}"): [410],
    ("HEAD", "/r/{slug}"): [410],
}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    code = getattr(failure, "code", None)
    key = (case.operation.method.upper(), case.operation.path)
    if code in ("ST201", "ST202") and response.status_code in STATE_RULES.get(key, []):
        return False
    if code != "ST202" or response.status_code != 400:
        return True
    rules = CROSS_FIELD_RULES.get(key)
    if not rules:
        return True
    try:
        body = json.loads(response.content)
    except ValueError:
        return True
    if not isinstance(body, dict):
        return True
    field, error = body.get("field"), str(body.get("error", ""))
    return not any(field == f and text in error for f, text in rules)
