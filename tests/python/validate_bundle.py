#!/usr/bin/env python3
"""Validates a FHIR Bundle (stdin) and every resource in it against the R4B models of the
`fhir.resources` package, independently of radsight. Prints one line per resource type with its
count; exits 1 on any error."""
import collections
import json
import sys

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

data = json.load(sys.stdin)
Bundle.model_validate(data)
counts = collections.Counter()
for entry in data.get("entry", []):
    resource = entry["resource"]
    kind = resource["resourceType"]
    get_fhir_model_class(kind).model_validate(resource)
    counts[kind] += 1
for kind, n in sorted(counts.items()):
    print(f"{kind} {n}")
