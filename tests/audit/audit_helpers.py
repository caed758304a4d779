"""Small builders shared by the audit tests (real recorder, real journal)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from pgwarden.audit import AuditRecorder, result_digest, schema

CARD = "4111111111111111"
EMAIL = "zed.sentinel@example.org"
PASSWORD = "hunter2-sentinel-pw"

_PATTERNS = [re.compile(r"\d{13,19}"), re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"), re.compile(re.escape(PASSWORD))]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


class Receiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that decodes what it gets."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.raw.append(body)
                receiver.requests.append(request)
                receiver.headers.append(dict(self.headers))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                receiver.arrived.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list:
        return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def otlp_attributes(span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind)
    return out




COLUMNS = ["id", "email", "card"]
ROWS = [["1", "a***@example.org", "************1111"], ["2", None, "************4242"], ["3", "c***", "****"]]


def run_statement(recorder: AuditRecorder, session, text: str = "SELECT id, email, card FROM customers", *,
                  rows=ROWS, decision: str = "allow") -> None:
    with recorder.statement(session, text, attributes={schema.DB_NAMESPACE: "shop"}) as st:
        st.decided({
            schema.DB_SYSTEM_NAME: "postgresql",
            schema.DB_QUERY_TEXT: text,
            schema.QUERY_SHA256: schema.query_digest(text),
            schema.DECISION: decision,
            schema.POLICY_VERSION: "v7",
            schema.RULE: "ai-agents",
            schema.REASON_CODES: ["masked"],
            schema.REASONS: ["masked: card_number is masked for ai-agents"],
            schema.MASKED_COLUMNS: ["public.customers.card"],
            schema.DB_OPERATION_NAME: "SELECT",
            schema.DB_COLLECTION_NAME: "public.customers",
        })
        st.upstream_text(text + " LIMIT 1001")
        if decision == "allow":
            st.result(COLUMNS, rows, len(rows), result_digest(COLUMNS, rows))


def lines(directory: Path, name: str = "journal-000001.jsonl") -> list[str]:
    return (directory / name).read_text().splitlines(keepends=True)


def records(directory: Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob("journal-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out
