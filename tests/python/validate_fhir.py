#!/usr/bin/env python3
"""Validates a FHIR Bundle of AuditEvents (stdin) against the R4B models of the `fhir.resources`
package, independently of radsight. Prints the number of AuditEvents; exits 1 on any error."""
import json
import sys

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

data = json.load(sys.stdin)
bundle = Bundle.model_validate(data)
count = 0
for entry in data.get("entry", []):
    AuditEvent.model_validate(entry["resource"])
    count += 1
print(f"{count} AuditEvents valid")
