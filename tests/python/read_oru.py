"""Reads a radsight ORU^R01 with hl7apy, validates it strictly, and prints what it found as JSON.

    python tests/python/read_oru.py MESSAGE.hl7

radsight-hl7-report's tests (crates/hl7-report/tests/oru/hl7apy.rs) run this with
RADSIGHT_TEST_PYTHON and compare the JSON with the result they wrote. The message is parsed by
hl7apy 1.3.5 against its v2.5.1 structures (`parse_message` with `VALIDATION_LEVEL.STRICT` and
`find_groups=True`) and checked with `msg.validate()`; every value is read from hl7apy's tree
(its groups, segments, fields and components), never from the raw text. On a parse or
validation error it prints the error to stderr and exits 1.

hl7apy does not decode escape sequences, so `unescape` below does (v2.5.1 section 2.7: \\F\\ \\S\\
\\T\\ \\R\\ \\E\\ and \\Xhh\\). Validation warnings (values outside hl7apy's copy of an HL7 table)
are not errors: they are listed in "warnings".

One correction to hl7apy: it parses every component of OBX-5 as ST, whose strict length is 199
characters, whatever type OBX-2 names. v2.5.1 gives OBX-5 the OBX-2 type, so a TX value or the
data of an ED (TX) may hold up to 65536 characters; the base64 audit receipt always exceeds
199. While OBX-5 is parsed, ST's limit is raised to TX's (`parse_field` below), and
`check_observation_value` applies the limit and form of the type OBX-2 names instead. Every
other field keeps hl7apy's own checks.
"""

import base64
import json
import os
import re
import sys
import tempfile

import hl7apy.base_datatypes as base_datatypes
import hl7apy.parser as parser
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

ST_MAX, TX_MAX = 199, 65536
NM_FORM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")

_parse_field = parser.parse_field
_st_init = base_datatypes.ST.__init__


def _st_with_tx_length(self, value, highlights=None, validation_level=None):
    base_datatypes.TextualDataType.__init__(self, value, TX_MAX, highlights, validation_level)


def parse_field(text, name=None, *args, **kwargs):
    """hl7apy's parse_field, with ST as long as TX while it parses OBX-5 (see the module doc)."""
    if name != "OBX_5":
        return _parse_field(text, name, *args, **kwargs)
    base_datatypes.ST.__init__ = _st_with_tx_length
    try:
        return _parse_field(text, name, *args, **kwargs)
    finally:
        base_datatypes.ST.__init__ = _st_init


parser.parse_field = parse_field


class ObservationValueError(Exception):
    pass


def check_observation_value(set_id, kind, parts):
    """OBX-5's raw components against the v2.5.1 type OBX-2 names (only the types radsight writes)."""
    expected = {"NM": 1, "ST": 1, "TX": 1, "RP": 4, "ED": 5}
    if kind not in expected:
        raise ObservationValueError("OBX %s: value type %s is not one radsight writes" % (set_id, kind))
    if len(parts) != expected[kind]:
        raise ObservationValueError("OBX %s: %s value has %d components, not %d" % (set_id, kind, len(parts), expected[kind]))
    limits = {"NM": [16], "ST": [ST_MAX], "TX": [TX_MAX], "RP": [ST_MAX] * 4, "ED": [ST_MAX] * 4 + [TX_MAX]}[kind]
    for n, (part, limit) in enumerate(zip(parts, limits), 1):
        if len(part) > limit:
            raise ObservationValueError("OBX %s: %s component %d is %d characters, more than %d" % (set_id, kind, n, len(part), limit))
    if kind == "NM" and not NM_FORM.match(parts[0]):
        raise ObservationValueError("OBX %s: %r is not an NM value" % (set_id, parts[0]))
    if kind == "ED" and parts[3] not in ("A", "Hex", "Base64"):
        raise ObservationValueError("OBX %s: ED encoding %r is not in table 0299" % (set_id, parts[3]))


SEQUENCES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def unescape(text):
    def one(match):
        body = match.group(1)
        if body in SEQUENCES:
            return SEQUENCES[body]
        if body.startswith("X") and len(body) > 1:
            return bytes.fromhex(body[1:]).decode("utf-8")
        raise ValueError("unknown escape sequence \\%s\\" % body)

    return re.sub(r"\\([^\\]*)\\", one, text)


def raw(element):
    """The element's text as it was in the message (still escaped).

    For a component of OBX-5 (type "varies") hl7apy keeps the parsed text in an ST datatype and
    re-escapes it when asked for `.value`, turning \\X0A\\ into \\E\\X0A\\E\\; the parsed text is
    read from that datatype instead.
    """
    children = list(element.children)
    if len(children) == 1 and getattr(children[0], "_value", None) is not None and children[0].name == "ST":
        return children[0]._value.value
    return element.to_er7()


def text(element):
    return unescape(raw(element))


def component(field, n):
    """Component n (1-based) of a field, unescaped; "" when absent."""
    for c in field.children:
        if c.name.endswith("_%d" % n):
            return text(c)
    if n == 1 and not field.children:
        return unescape(field.to_er7())
    return ""


def ce(field):
    return {"code": component(field, 1), "display": component(field, 2), "system": component(field, 3)}


def first(segment, name):
    """The first repetition of a field of `segment`, or None."""
    found = segment.children.get(name)
    return found[0] if found else None


def value(segment, name):
    field = first(segment, name)
    return None if field is None else text(field)


def main(path):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    segments = [s for s in data.split("\r") if s]
    try:
        msg = parse_message("\r".join(segments), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "report.txt")
            try:
                msg.validate(report_file=report)
            finally:
                lines = open(report).read().splitlines() if os.path.exists(report) else []
    except Exception as e:  # hl7apy raises its own exception types for parse and validation errors
        print("hl7apy: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    warnings = [line[len("Warning: "):] for line in lines if line.startswith("Warning: ")]
    try:
        out = summary(msg, warnings)
    except ObservationValueError as e:
        print("OBX-5: %s" % e, file=sys.stderr)
        return 1
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    return 0


def summary(msg, warnings):
    msh = msg.msh
    result = msg.oru_r01_patient_result
    pid = result.oru_r01_patient.pid
    order = result.oru_r01_order_observation
    orc, obr = order.orc, order.obr
    pid3, pid5 = first(pid, "PID_3"), first(pid, "PID_5")

    observations = []
    study_uid = None
    receipt = None
    for group in order.children.get("ORU_R01_OBSERVATION"):
        obx = group.obx
        kind = value(obx, "OBX_2")
        obx5 = first(obx, "OBX_5")
        raw_parts = [raw(c) for c in obx5.children] if obx5 is not None else []
        check_observation_value(value(obx, "OBX_1"), kind, raw_parts)
        parts = [unescape(p) for p in raw_parts]
        code = ce(first(obx, "OBX_3"))
        units = first(obx, "OBX_6")
        observations.append({
            "set_id": value(obx, "OBX_1"),
            "value_type": kind,
            "code": code,
            "value": parts[0] if len(parts) == 1 else parts,
            "units": ce(units) if units is not None else None,
            "reference_range": value(obx, "OBX_7"),
            "abnormal_flag": value(obx, "OBX_8"),
            "status": value(obx, "OBX_11"),
            "observed_at": value(obx, "OBX_14"),
            "method": ce(first(obx, "OBX_17")) if first(obx, "OBX_17") is not None else None,
            "equipment": value(obx, "OBX_18"),
        })
        if code == {"code": "113014", "display": "DICOM Study", "system": "DCM"}:
            study_uid = parts[0]
        if kind == "ED":
            source, data_type, subtype, encoding, payload = parts
            if encoding != "Base64":
                raise SystemExit("ED encoding is %r, not Base64" % encoding)
            receipt = {
                "source_application": source,
                "type": data_type,
                "subtype": subtype,
                "encoding": encoding,
                "json": json.loads(base64.b64decode(payload, validate=True).decode("utf-8")),
            }

    return {
        "message_type": raw(msh.msh_9),
        "control_id": value(msh, "MSH_10"),
        "processing_id": value(msh, "MSH_11"),
        "version": value(msh, "MSH_12"),
        "created_at": value(msh, "MSH_7"),
        "sending_application": value(msh, "MSH_3"),
        "receiving_application": value(msh, "MSH_5"),
        "accept_ack_type": value(msh, "MSH_15"),
        "application_ack_type": value(msh, "MSH_16"),
        "character_set": value(msh, "MSH_18"),
        "patient_id": component(pid3, 1),
        "assigning_authority": component(pid3, 4),
        "patient_name": {"family": component(pid5, 1), "given": component(pid5, 2), "type": component(pid5, 7)},
        "order_control": value(orc, "ORC_1"),
        "order_status": value(orc, "ORC_5"),
        "placer": value(obr, "OBR_2"),
        "filler": value(obr, "OBR_3"),
        "orc_placer": value(orc, "ORC_2"),
        "orc_filler": value(orc, "ORC_3"),
        "procedure": ce(first(obr, "OBR_4")),
        "observed_at": value(obr, "OBR_7"),
        "accession": value(obr, "OBR_18"),
        "reported_at": value(obr, "OBR_22"),
        "service_section": value(obr, "OBR_24"),
        "result_status": value(obr, "OBR_25"),
        "study_uid": study_uid,
        "notes": [value(nte, "NTE_3") for nte in order.children.get("NTE")],
        "observations": observations,
        "receipt": receipt,
        "warnings": warnings,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
