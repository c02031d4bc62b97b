#!/usr/bin/env python3
"""Store "a few results" for the benchmark patient: 3 prior studies, 2 with finished AI results.

    seed.py /path/to/radsight.db

Run after `radsight migrate`. All three studies are chest studies within the lookback window, so
all are relevant to the order-select example's CT chest / XR chest draft orders: two give model
cards, the third a "pending" card. Idempotent (INSERT OR REPLACE).
"""

import json
import sqlite3
import sys
import time

# The namespace of the bench client's patient ids (no [[patient_namespaces]]: its own iss).
NAMESPACE = "iss:https://ehr.example.org"
PATIENT = "Patient/example-patient"


def main() -> int:
    db = sqlite3.connect(sys.argv[1])
    now = int(time.time())
    day = 86400
    studies = [
        # study_uid, accession, modality, body_site, procedure_code, description, started_at
        ("1.2.826.0.1.3680043.10.1001.1", "ACC-1001", "CT", "chest", "24627-2", "CT Chest", now - 20 * day),
        ("1.2.826.0.1.3680043.10.1001.2", "ACC-1002", "DX", "chest", "36643-5", "XR Chest 2 Views", now - 60 * day),
        ("1.2.826.0.1.3680043.10.1001.3", "ACC-1003", "CT", "chest", "29252-4", "CT Chest WO contrast", now - 2 * day),
    ]
    for uid, acc, modality, site, code, desc, started in studies:
        db.execute(
            "INSERT OR REPLACE INTO studies (study_uid, patient_ref, patient_namespace, accession, modality, body_site,"
            " procedure_code, description, started_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (uid, PATIENT, NAMESPACE, acc, modality, site, code, desc, started, started + 600),
        )
    results = [
        (
            "bench-result-1",
            studies[0][0],
            "radsight-ct-chest-nodule",
            "1.4.0",
            [
                {"code": "nodule", "display": "Pulmonary nodule", "probability": 0.87, "threshold": 0.5},
                {"code": "effusion", "display": "Pleural effusion", "probability": 0.12, "threshold": 0.4},
            ],
        ),
        (
            "bench-result-2",
            studies[1][0],
            "radsight-cxr-multilabel",
            "2.1.3",
            [
                {"code": "pneumothorax", "display": "Pneumothorax", "probability": 0.03, "threshold": 0.35},
                {"code": "consolidation", "display": "Consolidation", "probability": 0.21, "threshold": 0.45},
            ],
        ),
    ]
    for rid, uid, model_id, version, findings in results:
        started = next(s[6] for s in studies if s[0] == uid)
        db.execute(
            "INSERT OR REPLACE INTO analysis_results (id, study_uid, status, model_id, model_version, weights_sha256,"
            " findings, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (rid, uid, "done", model_id, version, "9f2c4e1a7b3d" + "0" * 52, json.dumps(findings), None,
             started + 900, started + 1200),
        )
    db.commit()
    n_s = db.execute("SELECT count(*) FROM studies WHERE patient_ref = ?", (PATIENT,)).fetchone()[0]
    n_r = db.execute("SELECT count(*) FROM analysis_results WHERE status = 'done'").fetchone()[0]
    print(f"seeded {n_s} studies and {n_r} finished results for {PATIENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
