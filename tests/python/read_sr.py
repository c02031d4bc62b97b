"""Reads a radsight SR as highdicom understands it and prints what it found as JSON.

    python tests/python/read_sr.py REPORT.dcm

radsight-dicom-report's tests (crates/dicom-report/tests/objects/highdicom.rs) run this with
RADSIGHT_TEST_PYTHON and compare the JSON with the report they wrote. Everything here goes
through highdicom's own readers: `srread`, the TID 1500 `MeasurementReport` and its TID 1501
groups, `find_content_items`; nothing is taken from the raw data set that highdicom parses.
"""

import json
import sys

import highdicom as hd
from pydicom.sr.coding import Code

DCM = "DCM"
PRIVATE = "99RADSIGHT"


def code(concept):
    return {"value": concept.value, "scheme": concept.scheme_designator, "meaning": concept.meaning}


def texts(item, value, scheme, meaning="", recursive=False):
    return [i.value for i in hd.sr.utils.find_content_items(item, name=Code(value, scheme, meaning), value_type="TEXT", recursive=recursive)]


def main(path):
    sr = hd.sr.srread(path)
    report = sr.content
    out = {
        "sop_class_uid": str(sr.SOPClassUID),
        "is_measurement_report": isinstance(report, hd.sr.MeasurementReport),
        "title": code(report[0].name),
        "coding_schemes": [s.CodingSchemeDesignator for s in sr.get("CodingSchemeIdentificationSequence", [])],
    }
    root = report[0]

    procedures = hd.sr.utils.find_content_items(root, name=Code("121058", DCM, "Procedure reported"), value_type="CODE")
    out["procedures_reported"] = [code(p.value) for p in procedures]
    languages = hd.sr.utils.find_content_items(root, name=Code("121049", DCM, ""), value_type="CODE")
    out["languages"] = [code(lang.value) for lang in languages]

    out["device_observers"] = [
        {
            "uid": str(ctx.observer_identifying_attributes.uid),
            "name": ctx.observer_identifying_attributes.name,
            "manufacturer": ctx.observer_identifying_attributes.manufacturer_name,
            "model": ctx.observer_identifying_attributes.model_name,
        }
        for ctx in report.get_observer_contexts(observer_type=Code("121007", DCM, "Device"))
    ]

    libraries = hd.sr.utils.find_content_items(root, name=Code("111028", DCM, "Image Library"), value_type="CONTAINER")
    images = []
    for library in libraries:
        for image in hd.sr.utils.find_content_items(library, value_type="IMAGE", recursive=True):
            ref = image.ReferencedSOPSequence[0]
            images.append({"sop_class_uid": str(ref.ReferencedSOPClassUID), "sop_instance_uid": str(ref.ReferencedSOPInstanceUID)})
    out["image_library"] = images

    groups = []
    for group in report.get_image_measurement_groups():
        item = group[0]
        groups.append(
            {
                "tracking_identifier": group.tracking_identifier,
                "tracking_uid": str(group.tracking_uid),
                "finding_type": code(group.finding_type),
                "measurements": [
                    {"name": code(m.name), "value": m.value, "unit": code(m.unit)} for m in group.get_measurements()
                ],
                "qualitative_evaluations": [
                    {"name": code(q.name), "value": code(q.value)} for q in group.get_qualitative_evaluations()
                ],
                "algorithm": {
                    "name": texts(item, "111001", DCM),
                    "version": texts(item, "111003", DCM),
                    "manufacturer": texts(item, "122405", DCM),
                    "parameters": texts(item, "111002", DCM),
                },
            }
        )
    out["measurement_groups"] = groups

    evaluations = hd.sr.utils.find_content_items(root, name=Code("C0034375", "UMLS", ""), value_type="CONTAINER")
    out["comments"] = [t for e in evaluations for t in texts(e, "121106", DCM)]

    receipts = hd.sr.utils.find_content_items(root, name=Code("RS-RECEIPT", PRIVATE, ""), value_type="CONTAINER")
    out["receipts"] = [
        {
            "leaf_index": texts(r, "RS-LEAF-INDEX", PRIVATE),
            "tree_size": texts(r, "RS-TREE-SIZE", PRIVATE),
            "entry": texts(r, "RS-ENTRY", PRIVATE),
            "proof": texts(r, "RS-PROOF-HASH", PRIVATE),
            "checkpoint": texts(r, "RS-CHECKPOINT", PRIVATE),
            "log_origin": texts(r, "RS-LOG-ORIGIN", PRIVATE),
        }
        for r in receipts
    ]
    results = hd.sr.utils.find_content_items(root, name=Code("RS-RESULT", PRIVATE, ""), value_type="CONTAINER")
    out["results"] = [
        {
            "result_id": texts(r, "RS-RESULT-ID", PRIVATE),
            "saliency_method": texts(r, "RS-SAL-METHOD", PRIVATE),
            "faithfulness_metric": texts(r, "RS-FAITH-METRIC", PRIVATE),
            "faithfulness_value": [
                i.value for i in hd.sr.utils.find_content_items(r, name=Code("RS-FAITH-VALUE", PRIVATE, ""), value_type="NUM")
            ],
        }
        for r in results
    ]
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
