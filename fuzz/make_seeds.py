#!/usr/bin/env python3
"""Regenerates the seed corpora under fuzz/corpus/<target>/ from the repository's own examples
(examples/hl7/, cds-hooks/examples/) and a few hand-written cases. Run from the repository root:

    python3 fuzz/make_seeds.py
"""
import base64, json, os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(*path):
    with open(os.path.join(ROOT, *path), "rb") as f:
        return f.read()


# HL7 v2: the shipped examples, the parser tests' messages, and rejections.
OMI = ("MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261129101500||OMI^O23^OMI_O23|MSG0001|P|2.5.1\r"
       "PID|1||MRN123^^^HOSP^MR~999^^^SSA^SS||Doe^Jane||19700101|F\r"
       "ORC|NW|PLC100|FIL200||SC\r"
       "TQ1|1\r"
       "OBR|1|PLC100|FIL200|71260^CT CHEST W CONTRAST^CPT||||||||||||||ACC300||||||CT\r"
       "IPC|ACC300|RP1|1.2.840.113619.2.55.3.1234|SPS1|CT\r")
ORU = ("MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261129120000||ORU^R01|R1|P|2.3\r"
       "PID|1||P-77||Roe^Richard\r"
       "OBR|1|PLC1|FIL1|71250^CT CHEST^CPT||||||||||||||ACC9|||||||F\r"
       "OBX|1|ST|110180^Study Instance UID^DCM||1.2.3.99||||||F\r")
ORM = OMI.replace("OMI^O23^OMI_O23", "ORM^O01").replace(
    "IPC|ACC300|RP1|1.2.840.113619.2.55.3.1234|SPS1|CT", "ZDS|1.2.3.4^RIS^Application^DICOM")
hl7 = {
    "omi-o23-example.hl7": read("examples", "hl7", "omi-o23.hl7"),
    "oru-r01-example.hl7": read("examples", "hl7", "oru-r01.hl7"),
    "omi-o23.hl7": OMI,
    "oru-r01.hl7": ORU,
    "orm-o01-zds.hl7": ORM,
    "omi-newlines.hl7": OMI.replace("\r", "\n"),
    "oru-escapes.hl7": ORU.replace("Roe^Richard", "R\\T\\oe^Ri\\S\\ch\\F\\ard\\E\\").replace("OBX|1|", "OBX|1|ST|9^x||a\\X0D\\b\rOBX|2|"),
    "omi-cancel.hl7": OMI.replace("ORC|NW", "ORC|CA"),
    "adt-a01.hl7": OMI.replace("OMI^O23^OMI_O23", "ADT^A01"),
    "other-separators.hl7": OMI.replace("|", "#").replace("MSH#^~\\&", "MSH#^~\\&"),
    "latin1.hl7": OMI.encode().replace(b"Doe", b"D\xf6e"),
    "nul.hl7": OMI.replace("Doe", "D\0oe"),
}
for name, text in hl7.items():
    put("hl7_message", name, text)

# MLLP: the first two bytes are the size limit and read pattern, then the stream.
def mllp(*msgs):
    return b"".join(b"\x0b" + (m.encode() if isinstance(m, str) else m) + b"\x1c\x0d" for m in msgs)
put("mllp", "two-messages", b"\x40\x35" + mllp(OMI, ORU))
put("mllp", "noise-between", b"\x40\x07" + b"\r\n" + mllp(OMI) + b" junk \x1c" + mllp("MSH|a"))
put("mllp", "too-large", b"\x01\x10" + mllp(OMI * 3, ORU))
put("mllp", "restart", b"\x40\xff" + b"\x0bhalf\x0b\x0b" + OMI.encode() + b"\x1cX\x1c\x0d")
put("mllp", "unterminated", b"\x02\x03" + b"\x0b" + ORU.encode() + b"\x1c")

# WADO-RS multipart: Content-Type line, then the body.
CT = "multipart/related; type=\"application/dicom\"; boundary=\"XyZ\"\n"
put("multipart", "two-parts", CT + "--XyZ\r\nContent-Type: application/dicom\r\n\r\nAB\r\n--XyZ\r\n"
    "Content-Type: application/dicom\r\n\r\n\r\nC\r\n--XyZ--\r\n")
put("multipart", "preamble-padding-epilogue", "Multipart/Related;boundary=XyZ;type=application/dicom\n"
    "preamble\r\n--XyZ  \r\n\r\nbody\r\n--XyZ--epilogue")
put("multipart", "boundary-in-body", CT + "--XyZ\r\n\r\nx--XyZy\r\n--XyZ--")
put("multipart", "empty", CT + "--XyZ--")
put("multipart", "truncated", CT + "--XyZ\r\n\r\ntruncated")
put("multipart", "dicom-part", "multipart/related; boundary=b0undary-123\n".encode()
    + b"--b0undary-123\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
    + b"Content-Location: /studies/1/series/2/instances/3\r\n\r\n" + b"\0" * 128 + b"DICM\x02\x00\x00\x00"
    + b"\r\n--b0undary-123--\r\n")

# CDS Hooks: the shipped example requests, and variations.
for name in sorted(os.listdir(os.path.join(ROOT, "cds-hooks", "examples"))):
    put("cds_hooks_request", name, read("cds-hooks", "examples", name))
select = json.loads(read("cds-hooks", "examples", "order-select.json"))
sign = json.loads(read("cds-hooks", "examples", "order-sign.json"))
bare = dict(select); bare.pop("prefetch", None)
put("cds_hooks_request", "order-select-no-prefetch.json", json.dumps(bare))
auth = dict(select)
auth["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                             "scope": "patient/*.read", "subject": "radsight"}
put("cds_hooks_request", "order-select-fhir-authorization.json", json.dumps(auth))
nulls = dict(sign)
nulls["prefetch"] = {k: None for k in sign.get("prefetch", {})}
nulls["prefetch"]["patient"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
put("cds_hooks_request", "order-sign-unusable-prefetch.json", json.dumps(nulls))
put("cds_hooks_request", "duplicate-key.json", '{"hook": "patient-view", "hook": "order-sign", "context": {}}')

# FHIR: the draft orders and prefetch resources of the examples, and a notification.
seen = set()
for req in (select, sign):
    values = [req["context"].get("draftOrders")] + list((req.get("prefetch") or {}).values())
    for v in values:
        if not isinstance(v, dict):
            continue
        resources = [e.get("resource") for e in v.get("entry", [])] if v.get("resourceType") == "Bundle" else []
        for r in [v] + [r for r in resources if r]:
            key = json.dumps(r, sort_keys=True)
            name = r.get("resourceType", "x") + "-" + str(r.get("id", len(seen))) + ".json"
            if key not in seen and name not in seen:
                seen.add(key); seen.add(name)
                put("fhir", name, json.dumps(r, indent=1))
study = {"resourceType": "ImagingStudy", "id": "s1", "status": "available", "subject": {"reference": "Patient/p1"},
         "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}], "started": "2026-01",
         "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
         "endpoint": [{"reference": "#e1"}, {"reference": "Endpoint/e2"}, {"reference": "Endpoint/gone"}],
         "contained": [{"resourceType": "Endpoint", "id": "e1", "status": "active", "address": "https://pacs/dicom-web",
                        "connectionType": {"code": "dicom-wado-rs"}, "payloadType": [{"text": "DICOM"}]}]}
endpoint = {"resourceType": "Endpoint", "id": "e2", "status": "active", "address": "https://pacs2/dicom-web",
            "connectionType": {"code": "dicom-wado-rs"}, "payloadType": [{"text": "DICOM"}]}
put("fhir", "notification.json", json.dumps({"resourceType": "Bundle", "type": "subscription-notification", "entry": [
    {"resource": {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification"}},
    {"fullUrl": "https://ehr/fhir/ImagingStudy/s1", "resource": study},
    {"fullUrl": "https://ehr/fhir/Endpoint/e2", "resource": endpoint}]}, indent=1))
put("fhir", "observation-quantity.json", json.dumps({"resourceType": "Observation", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]}, "effectivePeriod": {"start": "2026"},
    "valueQuantity": {"value": 1.4, "unit": "mg/dL", "comparator": ">"}, "subject": {"reference": "Patient/p1"}}))

# JWT: mode 0 (raw Authorization), 1 (forged: header, claims, signature), 2 (signed).
HEADER = '{"alg":"ES256","typ":"JWT","kid":"KID"}'
AUD = "https://radsight.example.org/cds-services/radsight-imaging-order-select"
CLAIMS = json.dumps({"iss": "https://ehr.example.org", "aud": AUD, "iat": 0, "exp": 0, "jti": "j1"}).replace(
    '"iat": 0', '"iat": NOW').replace('"exp": 0', '"exp": LATER')
b64 = lambda s: base64.urlsafe_b64encode(s.encode() if isinstance(s, str) else s).rstrip(b"=").decode()
put("client_jwt", "raw-token", b"\x00Bearer " + f"{b64(HEADER)}.{b64(CLAIMS)}.{b64(bytes(64))}".encode())
NONE = b64('{"alg":"none","typ":"JWT"}')
put("client_jwt", "raw-alg-none", b"\x00bearer " + f"{NONE}.{b64(CLAIMS)}.".encode())
put("client_jwt", "raw-basic", b"\x00Basic dXNlcjpwYXNz")
put("client_jwt", "forged", b"\x01" + HEADER.encode() + b"\0" + CLAIMS.encode() + b"\0" + bytes(64))
put("client_jwt", "forged-hs256", b"\x01" + HEADER.replace("ES256", "HS256").encode() + b"\0" + CLAIMS.encode() + b"\0sig")
put("client_jwt", "signed", b"\x02" + HEADER.encode() + b"\0" + CLAIMS.encode())
put("client_jwt", "signed-scope-tenant", b"\x02" + HEADER.encode() + b"\0"
    + CLAIMS.replace('"jti": "j1"', '"jti": "j2", "scope": "audit.read", "tenant": "t1", "nbf": NOW').encode())
put("client_jwt", "signed-expired", b"\x02" + HEADER.encode() + b"\0" + CLAIMS.replace("LATER", "1").encode())
put("client_jwt", "signed-wrong-aud", b"\x02" + HEADER.encode() + b"\0" + CLAIMS.replace(AUD, "https://elsewhere").encode())
put("client_jwt", "signed-rs256-header", b"\x02" + HEADER.replace("ES256", "RS256").encode() + b"\0" + CLAIMS.encode())
put("client_jwt", "signed-jku", b"\x02" + HEADER.replace('"kid"', '"jku":"https://ehr.example.org/jwks","kid"').encode()
    + b"\0" + CLAIMS.encode())
